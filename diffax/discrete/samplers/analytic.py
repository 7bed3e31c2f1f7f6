"""Analytic (Tweedie) sampling from a concrete score.

Where alpha(t) = 0 (the first step of `Uniform` with a schedule that reaches alpha(1) = 0:
linear, cosine, polynomial) the Tweedie step p(x_s | x_t) ~ P(s->t)[x_s, x_t] (r P(s->t)^-1)(x_s)
is 0/0: P(s->t) = 11^T / V is singular and the concrete score is identically 1, for every data
law, because x_t is independent of the data. The step's limit is x_s ~ p_s, the marginal at s
under the model's denoiser p(x_0^l), and that denoiser is in the score's first non-vanishing
derivative at alpha = 0: r_y = 1 + V alpha (p(x_0^l = y) - p(x_0^l = x^l)) + O(alpha^2) for
`Uniform`. The first step therefore evaluates the network once in forward mode
(`ModelCaller.with_time_derivative`) and takes the ancestral step with that denoiser.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from diffax.discrete.categorical import sample_categorical
from diffax.discrete.parameterizations import ModelFn
from diffax.discrete.processes import Process, Uniform
from diffax.discrete.samplers.ancestral import posterior_rule
from diffax.discrete.samplers.loop import run_grid
from diffax.discrete.samplers.model_calls import ModelCaller
from diffax.discrete.samplers.registry import register_sampler

# Highest derivative order tried for the first non-vanishing derivative of alpha at t = 1
# (linear and polynomial schedules: 1, cosine: 2).
_MAX_ORDER = 4


def tweedie_rule(process: Process, caller: ModelCaller):
    """Step rule x_s ~ P(s->t)[., x_t] (r @ P(s->t)^-1)(.) from the model's concrete score."""

    def rule(key, x, out, state, t, s):
        logits = process.tweedie_logits(x, s, t, caller.score(out, x, t))
        return sample_categorical(key, logits), state

    return rule


def alpha_taylor(schedule, t: float = 1.0) -> tuple[int, float]:
    """`(k, alpha^(k)(t))`: the first derivative order of alpha that is nonzero at `t`.

    Computed once, at trace time, by nested forward-mode differentiation of the schedule's
    closed form (schedules are static, so this also works under `jit`).
    """
    derivative = schedule.alpha
    with jax.ensure_compile_time_eval():
        for order in range(1, _MAX_ORDER + 1):
            derivative = (lambda f: lambda u: jax.jvp(f, (u,), (jnp.ones_like(u),))[1])(derivative)
            value = float(derivative(jnp.float32(t)))
            if value != 0.0:
                return order, value
    raise ValueError(
        f"alpha(t) of {type(schedule).__name__} has no nonzero derivative of order <= "
        f"{_MAX_ORDER} at t = {t}, where alpha = 0: the analytic step's limit there is undefined"
    )


def uniform_limit_denoiser(
    process: Uniform, x: jax.Array, d_log_r: jax.Array, alpha_derivative: float
) -> jax.Array:
    """Denoiser log-probabilities `[B, L, V]` implied by a concrete score where alpha(t) = 0.

    With D_y = d log r_y / d alpha = (d^k log r_y / dt^k) / alpha^(k)(t) (k the first order at
    which alpha's derivative is nonzero; lower derivatives of log r vanish with alpha),
    p(x_0^l = y) - p(x_0^l = x^l) = D_y / V, and the probabilities sum to 1. Negative values
    (inexact scores) are clipped; a row with no mass is uniform.

    Args:
      process: `Uniform`. x: `[B, L]` tokens at t. d_log_r: `[B, L, V]` k-th t-derivative of
        the log concrete score at t. alpha_derivative: alpha^(k)(t).
    """
    v = process.vocab_size
    is_x = jax.nn.one_hot(x, v, dtype=jnp.bool_)
    gap = jnp.where(is_x, 0.0, d_log_r / (v * alpha_derivative))
    p_x = (1.0 - jnp.sum(gap, axis=-1, keepdims=True)) / v
    p = jnp.maximum(p_x + gap, 0.0)
    total = jnp.sum(p, axis=-1, keepdims=True)
    p = jnp.where(total > 0, p, 1.0)
    return jnp.log(p) - jnp.log(jnp.sum(p, axis=-1, keepdims=True))


def uses_uniform_limit(process: Process, prediction: str) -> bool:
    """Whether a score-driven Tweedie step starts at alpha = 0 on `Uniform` (needs the limit)."""
    return (
        prediction == "concrete_score"
        and isinstance(process, Uniform)
        and process.schedule.alpha_at(1.0) == 0.0
    )


def uniform_limit_first_step(process: Uniform, caller: ModelCaller):
    """The first step (t = 1, alpha = 0) of `analytic` on `Uniform` with a concrete score.

    x_s ~ p(x_s | x_1) = p_s under the model's denoiser (the ancestral step, whose P(s->1)
    factor is the constant 1/V), or x_0 from that denoiser when the step is also the last.
    """
    order, alpha_k = alpha_taylor(process.schedule, 1.0)

    def first_step(key, x, state, t, s, last):
        _, d_out, state = caller.with_time_derivative(state, x, t, order)
        log_p0 = caller.temper(uniform_limit_denoiser(process, x, d_out, alpha_k))
        if last:
            return sample_categorical(key, log_p0), state
        return sample_categorical(key, process.posterior_logits(x, s, t, log_p0)), state

    return first_step


@register_sampler("analytic")
def analytic(
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
    """Analytic sampler: per-token Tweedie steps p(x_s | x_t) from the concrete score.

    The step is exact for one token given the others (Tweedie's formula for a CTMC); negative
    weights from inexact scores are clipped. With a denoiser the Tweedie step on the implied
    score equals the ancestral posterior step, which is what is computed then.

    Where alpha(t) = 0 (`Uniform` with a schedule reaching alpha(1) = 0, e.g. the default
    linear one) the score is identically 1 and the formula is 0/0; the first step is its limit,
    x_s ~ p_s under the denoiser read from the score's first non-vanishing time derivative at
    t = 1 (see the module docstring). That step evaluates `model_fn` once with nested
    `jax.jvp` in t (one NFE, a few forward passes of compute), so `model_fn` must be
    differentiable in t there. `General` processes with alpha(1) = 0 keep the clipped formula
    (their score approaches 1 like alpha^gap, not analytically in t).

    Args: as `ancestral` (use prediction="concrete_score" for a score network).

    Returns:
      `(tokens [B, L] int32, {"nfe": int32})`. Positions where the model output was not finite
      (NaN or +inf) raise a `ValueError` in an eager call; under `jit` they are returned as -1
      (`INVALID_TOKEN`; check `jnp.all(tokens >= 0)`, e.g. with `jax.experimental.checkify`).

    Reference: Lou et al. 2024 (SEDD), sec. 4.2, Tweedie tau-leaping.
    """
    caller = ModelCaller(
        process, model_fn, prediction, shape, temperature=temperature, top_p=top_p, cache=cache
    )
    first_step = None
    if prediction == "denoiser":
        rule = posterior_rule(process, caller)
    else:
        rule = tweedie_rule(process, caller)
        if uses_uniform_limit(process, prediction):
            first_step = uniform_limit_first_step(process, caller)
    return run_grid(
        key,
        process,
        caller,
        shape,
        num_steps,
        rule,
        fixed_tokens=fixed_tokens,
        fixed_mask=fixed_mask,
        first_step=first_step,
        sampler="analytic",
    )
