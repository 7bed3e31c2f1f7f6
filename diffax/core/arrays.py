"""Array helpers shared by both halves: broadcasting per-example coefficients, log-space and
safe-division arithmetic, and float32 edge constants."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# The smallest normal float32. alpha or sigma equal to zero (sigma(0) = 0 for VP, alpha(1) = 0 for
# RectifiedFlow) are floored at this value where a logarithm or a rate needs them, so that every
# quantity stays finite in float32 (it becomes large instead of infinite).
TINY = float(np.finfo(np.float32).tiny)


def float_dtype() -> np.dtype:
    """JAX's default float: float64 when the user enabled `jax_enable_x64`, else float32.

    Times, grids and sampler states of the continuous layer are built in this dtype, so a user
    who enables x64 (EDM recommends a float64 sampler state) gets float64 end to end.
    """
    return jax.dtypes.canonicalize_dtype(jnp.float64)


def expand_as(c: jax.Array, x: jax.Array) -> jax.Array:
    """Reshapes a scalar or `[B]` coefficient to `[B, 1, ..., 1]` so it broadcasts against `x`."""
    c = jnp.asarray(c)
    if c.ndim == 0:
        return c
    return c.reshape(c.shape + (1,) * (x.ndim - c.ndim))


def safe_div(num: jax.Array, den: jax.Array) -> jax.Array:
    """`num / den`, and 0 where `den == 0` (gradient-safe double `where`)."""
    zero = den == 0
    return jnp.where(zero, jnp.zeros_like(num), num / jnp.where(zero, jnp.ones_like(den), den))


def sum_event(x: jax.Array) -> jax.Array:
    """Sums over every axis but the leading batch axis: `[B, ...] -> [B]`."""
    return jnp.sum(x, axis=tuple(range(1, x.ndim)))


def event_size(x: jax.Array) -> int:
    """Number of elements per example (`prod(x.shape[1:])`)."""
    return int(np.prod(x.shape[1:], dtype=np.int64))


def per_example(value: jax.Array, ndim: int) -> jax.Array:
    """Reshapes a `[B]` array so it broadcasts against an array with `ndim` dimensions."""
    return value.reshape(value.shape[:1] + (1,) * (ndim - 1))


def log_one_hot(x: jax.Array, num_classes: int) -> jax.Array:
    """log of a one-hot encoding: 0 at `x`, -inf elsewhere. Returns `x.shape + (num_classes,)`."""
    return jnp.where(jax.nn.one_hot(x, num_classes, dtype=jnp.bool_), 0.0, -jnp.inf)


def log1mexp(log_p: jax.Array) -> jax.Array:
    """log(1 - exp(log_p)) for log_p <= 0, accurate at both ends (Maechler 2012).

    `log_p` is capped at -1e-30 so that the value and gradient stay finite at log_p = 0 (the
    result, about -69, is negligible wherever it is added to other terms); each branch is
    evaluated on inputs where it is finite so that `jnp.where` does not leak NaN gradients.
    """
    log_p = jnp.minimum(log_p, -1e-30)
    near_zero = log_p > -0.6931472
    a = jnp.log(-jnp.expm1(jnp.where(near_zero, log_p, -1.0)))
    b = jnp.log1p(-jnp.exp(jnp.where(near_zero, -1.0, log_p)))
    return jnp.where(near_zero, a, b)


def safe_log(p: jax.Array) -> jax.Array:
    """log of a probability clipped at zero (negative rounding errors become -inf, not NaN)."""
    p = jnp.maximum(p, 0.0)
    return jnp.where(p > 0, jnp.log(jnp.where(p > 0, p, 1.0)), -jnp.inf)
