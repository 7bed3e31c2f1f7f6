"""ReMDM: masked diffusion sampling that may remask already revealed tokens."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from diffax.core import check_choice, is_concrete
from diffax.discrete.categorical import sample_categorical
from diffax.discrete.parameterizations import ModelFn
from diffax.discrete.processes import Masked
from diffax.discrete.samplers.loop import run_grid
from diffax.discrete.samplers.masked_only import require_masked
from diffax.discrete.samplers.model_calls import ModelCaller
from diffax.discrete.samplers.registry import register_sampler

STRATEGIES = ("cap", "rescale")


@register_sampler("remdm")
def remdm(
    key: jax.Array,
    process: Masked,
    model_fn: ModelFn,
    shape: tuple[int, int],
    *,
    num_steps: int,
    prediction: str = "denoiser",
    eta: float = 0.04,
    strategy: str = "cap",
    temperature: float = 1.0,
    top_p: float = 1.0,
    cache: bool = False,
    fixed_tokens: jax.Array | None = None,
    fixed_mask: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, Any]]:
    """ReMDM sampler with remasking probability sigma_t.

    From t to s a revealed token is remasked with probability sigma_t, and a masked token is
    revealed (as a denoiser draw) with probability (alpha_s - (1 - sigma_t) alpha_t) /
    (1 - alpha_t). Any sigma_t <= sigma_max = min(1, (1 - alpha_s) / alpha_t) keeps the marginals
    q(x_s | x_0) of the forward process; sigma_t = 0 is `ancestral`.

    Args:
      eta: remasking strength; strategy "cap": sigma = min(eta, sigma_max), "rescale":
        sigma = eta * sigma_max (eta in [0, 1]).
      Other arguments: as `ancestral` (`Masked` only).

    Returns:
      `(tokens [B, L] int32, {"nfe": int32})`. Positions where the model output was not finite
      (NaN or +inf) raise a `ValueError` in an eager call; under `jit` they are returned as -1
      (`INVALID_TOKEN`; check `jnp.all(tokens >= 0)`, e.g. with `jax.experimental.checkify`).

    Reference: Wang et al. 2025, Remasking Discrete Diffusion Models with Inference-Time Scaling.
    """
    require_masked(process, "remdm")
    check_choice(strategy, STRATEGIES, "strategy")
    if is_concrete(eta) and not 0.0 <= float(eta) <= 1.0:  # eta may be traced (a sweep)
        raise ValueError(f"eta must lie in [0, 1], got {eta}")
    caller = ModelCaller(
        process, model_fn, prediction, shape, temperature=temperature, top_p=top_p, cache=cache
    )

    def rule(key, x, out, state, t, s):
        a_t, a_s = process.alpha(t), process.alpha(s)
        sigma_max = jnp.minimum(1.0, process.schedule.one_minus_alpha(s) / a_t)
        sigma = jnp.minimum(eta, sigma_max) if strategy == "cap" else eta * sigma_max
        k_x0, k_u = jax.random.split(key)
        x0 = sample_categorical(k_x0, caller.denoiser(out, x, t))
        u = jax.random.uniform(k_u, x.shape)
        p_reveal = (a_s - (1.0 - sigma) * a_t) / process.schedule.one_minus_alpha(t)
        masked = x == process.mask_id
        revealed = jnp.where(u < p_reveal, x0, process.mask_id)
        kept = jnp.where(u < sigma, process.mask_id, x)
        return jnp.where(masked, revealed, kept).astype(jnp.int32), state

    return run_grid(
        key,
        process,
        caller,
        shape,
        num_steps,
        rule,
        fixed_tokens=fixed_tokens,
        fixed_mask=fixed_mask,
        sampler="remdm",
    )
