"""Ancestral sampling: exact posterior steps q(x_s | x_t, x_0) averaged over the denoiser."""

from __future__ import annotations

from typing import Any

import jax

from diffax.discrete.categorical import sample_categorical
from diffax.discrete.parameterizations import ModelFn
from diffax.discrete.processes import Process
from diffax.discrete.samplers.loop import run_grid
from diffax.discrete.samplers.model_calls import ModelCaller
from diffax.discrete.samplers.registry import register_sampler


def posterior_rule(process: Process, caller: ModelCaller):
    """Step rule x_s ~ sum_x0 p_theta(x_0 | x_t) q(x_s | x_t, x_0)."""

    def rule(key, x, out, state, t, s):
        logits = process.posterior_logits(x, s, t, caller.denoiser(out, x, t))
        return sample_categorical(key, logits), state

    return rule


@register_sampler("ancestral")
def ancestral(
    key: jax.Array,
    process: Process,
    model_fn: ModelFn,
    shape: tuple[int, int],
    *,
    num_steps: int,
    prediction: str = "denoiser",
    temperature: float = 1.0,
    top_p: float = 1.0,
    cache: bool = False,
    fixed_tokens: jax.Array | None = None,
    fixed_mask: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, Any]]:
    """Ancestral sampling with the denoiser posterior, for any process.

    From t to s each token moves to x_s ~ sum_x0 p_theta(x_0 | x_t) q(x_s | x_t, x_0). For
    `Masked` this reveals each masked token with probability (alpha(s) - alpha(t)) /
    (1 - alpha(t)) (carry-over unmasking); with `cache=True` and a time-free denoiser the
    network is skipped on steps where nothing was revealed.

    Args:
      key: PRNG key.
      process: `Masked`, `Uniform` or `General`.
      model_fn: `(tokens [B, L] int32, t [B]) -> [B, L, V]`.
      shape: `(B, L)`.
      num_steps: reverse steps on the uniform grid (the last one draws x_0 from the denoiser).
      prediction: "denoiser" or "concrete_score" (converted to a denoiser).
      temperature: divides the denoiser logits. top_p: nucleus filtering of the denoiser.
      cache: reuse p(x_0 | x_t) when x_t is unchanged (Masked, time-free denoiser).
      fixed_tokens, fixed_mask: `[B, L]` infilling context kept fixed.

    Returns:
      `(tokens [B, L] int32, {"nfe": int32})`. Positions where the model output was not finite
      (NaN or +inf) raise a `ValueError` in an eager call; under `jit` they are returned as -1
      (`INVALID_TOKEN`; check `jnp.all(tokens >= 0)`, e.g. with `jax.experimental.checkify`).

    Reference: Austin et al. 2021 (D3PM); Sahoo et al. 2024 (MDLM), eq. 7 and caching.
    """
    caller = ModelCaller(
        process, model_fn, prediction, shape, temperature=temperature, top_p=top_p, cache=cache
    )
    rule = posterior_rule(process, caller)
    return run_grid(
        key,
        process,
        caller,
        shape,
        num_steps,
        rule,
        fixed_tokens=fixed_tokens,
        fixed_mask=fixed_mask,
        sampler="ancestral",
    )
