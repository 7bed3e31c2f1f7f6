"""Broadcasting per-example coefficients against batched data, and float32 edge constants."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# The smallest normal float32. alpha or sigma equal to zero (sigma(0) = 0 for VP, alpha(1) = 0 for
# RectifiedFlow) are floored at this value where a logarithm or a rate needs them, so that every
# quantity stays finite in float32 (it becomes large instead of infinite).
TINY = float(np.finfo(np.float32).tiny)


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
