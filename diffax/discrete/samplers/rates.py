"""Rate-based samplers: CTMC Euler and tau-leaping, with rates frozen at the start of a step."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from diffax.discrete.categorical import sample_categorical
from diffax.discrete.parameterizations import ModelFn
from diffax.discrete.processes import Process
from diffax.discrete.samplers.loop import run_grid
from diffax.discrete.samplers.model_calls import ModelCaller
from diffax.discrete.samplers.registry import register_sampler

# e^(-1e30) is 0 in float32: capping the expected jump count there changes no probability and
# keeps log(lam) - lam finite when lam is infinite (beta(1) = inf).
_MAX_JUMPS = 1e30


def _jump_parts(scale: jax.Array, log_rel: jax.Array, h: jax.Array):
    """Expected number of jumps lam = h * total rate `[B, L, 1]`, and log destination weights."""
    lse = jax.nn.logsumexp(log_rel, axis=-1, keepdims=True)
    has = jnp.isfinite(lse)
    lam = jnp.where(has, h * scale.reshape(-1, 1, 1) * jnp.exp(jnp.where(has, lse, 0.0)), 0.0)
    return lam, log_rel - jnp.where(has, lse, 0.0)


def euler_logits(scale: jax.Array, log_rel: jax.Array, x: jax.Array, h) -> jax.Array:
    """One CTMC Euler step: P(y) = h R(y) for y != x, P(x) = 1 - h sum R, clipped to [0, 1].

    When h sum R > 1 the token jumps surely, to y with probability R(y) / sum R.

    Args:
      scale: `[B]`; log_rel: `[B, L, S]` (rates = scale * exp(log_rel)); x: `[B, L]`; h: step.

    Returns:
      `[B, L, S]` logits of the next state.

    Reference: Campbell et al. 2022; Lou et al. 2024 (SEDD), the Euler sampler.
    """
    lam, log_dest = _jump_parts(scale, log_rel, h)
    p_jump = jnp.minimum(lam, 1.0)
    stay = jax.nn.one_hot(x, log_rel.shape[-1], dtype=jnp.bool_)
    return jnp.where(stay, jnp.log1p(-p_jump), log_dest + jnp.log(p_jump))


def tau_leaping_logits(scale: jax.Array, log_rel: jax.Array, x: jax.Array, h) -> jax.Array:
    """One tau-leaping step with Poisson jump counts N_y ~ Poisson(h R(y)), independent over y.

    A token moves to y when exactly one jump fires (probability h R(y) exp(-h sum R)); when two
    or more fire the moves conflict (categorical states cannot add) and the token stays.

    Returns:
      `[B, L, S]` logits of the next state.

    Reference: Campbell et al. 2022, A Continuous Time Framework for Discrete Denoising Models,
    sec. 4 (tau-leaping).
    """
    lam, log_dest = _jump_parts(scale, log_rel, h)
    lam = jnp.minimum(lam, _MAX_JUMPS)
    log_one = jnp.where(lam > 0, jnp.log(jnp.where(lam > 0, lam, 1.0)) - lam, -jnp.inf)
    stay = jax.nn.one_hot(x, log_rel.shape[-1], dtype=jnp.bool_)
    return jnp.where(stay, jnp.log1p(-jnp.exp(log_one)), log_dest + log_one)


def rate_rule(caller: ModelCaller, step_logits):
    """Step rule that applies `step_logits(scale, log_rel, x, h)` to the model's reverse rates."""

    def rule(key, x, out, state, t, s):
        scale, log_rel = caller.rates(out, x, t)
        return sample_categorical(key, step_logits(scale, log_rel, x, t - s)), state

    return rule


def _run(name, step_logits, key, process, model_fn, shape, num_steps, prediction, options):
    fixed = {k: options.pop(k, None) for k in ("fixed_tokens", "fixed_mask")}
    caller = ModelCaller(process, model_fn, prediction, shape, **options)
    rule = rate_rule(caller, step_logits)
    return run_grid(key, process, caller, shape, num_steps, rule, **fixed, sampler=name)


@register_sampler("euler")
def euler(
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
    """CTMC Euler sampler: first-order steps with the reverse rates at the start of each step.

    Args: as `ancestral`.

    Returns:
      `(tokens [B, L] int32, {"nfe": int32})`. Positions where the model output was not finite
      (NaN or +inf) raise a `ValueError` in an eager call; under `jit` they are returned as -1
      (`INVALID_TOKEN`; check `jnp.all(tokens >= 0)`, e.g. with `jax.experimental.checkify`).

    Reference: Campbell et al. 2022; Lou et al. 2024 (SEDD), Euler sampling.
    """
    options = dict(temperature=temperature, top_p=top_p, cache=cache)
    options.update(fixed_tokens=fixed_tokens, fixed_mask=fixed_mask)
    return _run(
        "euler", euler_logits, key, process, model_fn, shape, num_steps, prediction, options
    )


@register_sampler("tau_leaping")
def tau_leaping(
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
    """Tau-leaping: all positions jump in parallel with Poisson counts from frozen rates.

    Args: as `ancestral`.

    Returns:
      `(tokens [B, L] int32, {"nfe": int32})`. Positions where the model output was not finite
      (NaN or +inf) raise a `ValueError` in an eager call; under `jit` they are returned as -1
      (`INVALID_TOKEN`; check `jnp.all(tokens >= 0)`, e.g. with `jax.experimental.checkify`).

    Reference: Campbell et al. 2022, A Continuous Time Framework for Discrete Denoising Models.
    """
    options = dict(temperature=temperature, top_p=top_p, cache=cache)
    options.update(fixed_tokens=fixed_tokens, fixed_mask=fixed_mask)
    return _run(
        "tau_leaping",
        tau_leaping_logits,
        key,
        process,
        model_fn,
        shape,
        num_steps,
        prediction,
        options,
    )
