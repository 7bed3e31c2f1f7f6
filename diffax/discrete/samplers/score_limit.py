"""The denoiser read from a concrete score where alpha(t) = 0 (the first step of the uniform
process with a schedule that reaches alpha(1) = 0: linear, cosine, polynomial).

There P(s->t) = 11^T / V is singular and the concrete score is identically 1 for every data law,
because x_t is independent of the data, so the Tweedie step and the score -> denoiser conversion
are 0/0. The denoiser p(x_0^l) is in the score's first non-vanishing derivative in t:
r_y = 1 + V alpha (p(x_0^l = y) - p(x_0^l = x^l)) + O(alpha^2) for a process whose transition
is P(0->t) = alpha I + (1 - alpha) 11^T / V. `Model.denoiser_logits` evaluates the network once in
forward mode there (`Model.with_time_derivative`) and reads the denoiser from that derivative.

Only processes that mix to the uniform law in that way qualify (checked on
`process.marginal_matrix`, no class test): a general rate matrix approaches its stationary law
like alpha^gap, not analytically in t, and keeps the clipped Tweedie formula.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from diffax.core import is_concrete
from diffax.discrete.processes import Process

# Highest derivative order tried for the first non-vanishing derivative of alpha at t = 1
# (linear and polynomial schedules: 1, cosine: 2).
_MAX_ORDER = 4


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


def mixes_uniformly(process: Process) -> bool:
    """Whether P(0->t) = alpha I + (1 - alpha) 11^T / V (checked at t = 1/2, on the host)."""
    if process.mask_id is not None:
        return False
    with jax.ensure_compile_time_eval():
        t = jnp.full((1,), 0.5, jnp.float32)
        matrix, alpha = process.marginal_matrix(t), process.alpha(t)
    if not (is_concrete(matrix) and is_concrete(alpha)):
        return False
    v = process.num_states
    a = float(np.asarray(alpha).reshape(-1)[0])
    expected = a * np.eye(v) + (1.0 - a) / v
    return bool(np.allclose(np.asarray(matrix)[0], expected, atol=1e-5))


def score_limit(process: Process, prediction: str) -> tuple[int, float] | None:
    """`(k, alpha^(k)(1))` when a concrete score needs the alpha = 0 limit at t = 1, else None."""
    if prediction != "concrete_score" or process.mask_id is not None:
        return None
    if process.schedule.alpha_at(1.0) != 0.0 or not mixes_uniformly(process):
        return None
    return alpha_taylor(process.schedule, 1.0)


def uniform_limit_denoiser(
    process: Process, x: jax.Array, d_log_r: jax.Array, alpha_derivative: float
) -> jax.Array:
    """Denoiser log-probabilities `[B, L, V]` implied by a concrete score where alpha(t) = 0.

    With D_y = d log r_y / d alpha = (d^k log r_y / dt^k) / alpha^(k)(t) (k the first order at
    which alpha's derivative is nonzero; lower derivatives of log r vanish with alpha),
    p(x_0^l = y) - p(x_0^l = x^l) = D_y / V, and the probabilities sum to 1. Negative values
    (inexact scores) are clipped; a row with no mass is uniform.

    Args:
      process: a process that mixes uniformly (`mixes_uniformly`). x: `[B, L]` tokens at t.
      d_log_r: `[B, L, V]` k-th t-derivative of the log concrete score at t.
      alpha_derivative: alpha^(k)(t).
    """
    v = process.vocab_size
    is_x = jax.nn.one_hot(x, v, dtype=jnp.bool_)
    gap = jnp.where(is_x, 0.0, d_log_r / (v * alpha_derivative))
    p_x = (1.0 - jnp.sum(gap, axis=-1, keepdims=True)) / v
    p = jnp.maximum(p_x + gap, 0.0)
    total = jnp.sum(p, axis=-1, keepdims=True)
    p = jnp.where(total > 0, p, 1.0)
    return jnp.log(p) - jnp.log(jnp.sum(p, axis=-1, keepdims=True))
