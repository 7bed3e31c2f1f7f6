"""Argument checks that fail early with a message naming the argument and the allowed values.

Checks on *values* (time in [0, 1], token ids in range) run when the value is concrete (a Python
number, NumPy array or a committed JAX array outside `jit`); under tracing only shapes and dtypes
can be checked, so those checks run at trace time and value checks are skipped there.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(x: Any) -> bool:
    """True when `x` holds a known value (not a tracer inside `jit`/`vmap`/`grad`)."""
    return not isinstance(x, jax.core.Tracer)


def check_choice(value: Any, allowed: Iterable[Any], argument: str) -> None:
    """Raises `ValueError` unless `value` is one of `allowed`."""
    allowed = list(allowed)
    if value not in allowed:
        raise ValueError(
            f"{argument}={value!r} is not allowed; allowed values: {', '.join(map(repr, allowed))}"
        )


def check_positive_int(value: Any, argument: str, minimum: int = 1) -> int:
    """Returns `value` as an int, raising `ValueError` unless it is an integer >= `minimum`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{argument} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{argument} must be an integer >= {minimum}, got {value}")
    return int(value)


def check_time(t: Any, argument: str = "t", low: float = 0.0, high: float = 1.0) -> None:
    """Raises `ValueError` if a concrete `t` has entries outside [low, high] or NaN."""
    if not is_concrete(t):
        return
    arr = np.asarray(t)
    if not np.issubdtype(arr.dtype, np.floating) and not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{argument} must be a real number or array, got dtype {arr.dtype}")
    if arr.size and (np.any(np.isnan(arr)) or arr.min() < low or arr.max() > high):
        raise ValueError(
            f"{argument} must lie in [{low}, {high}]; got values in [{arr.min()}, {arr.max()}]"
        )


def check_tokens(tokens: Any, num_ids: int, argument: str = "tokens") -> None:
    """Checks that `tokens` is an integer array; if concrete, that ids lie in [0, num_ids)."""
    dtype = jnp.asarray(tokens).dtype if is_concrete(tokens) else tokens.dtype
    if not jnp.issubdtype(dtype, jnp.integer):
        raise TypeError(f"{argument} must be an integer array (int32 ids), got dtype {dtype}")
    if is_concrete(tokens):
        arr = np.asarray(tokens)
        if arr.size and (arr.min() < 0 or arr.max() >= num_ids):
            raise ValueError(
                f"{argument} holds ids in [{arr.min()}, {arr.max()}]; allowed ids are "
                f"0..{num_ids - 1}"
            )


def check_shape(x: Any, expected: Sequence[int], argument: str) -> None:
    """Raises `ValueError` unless `x.shape == expected` (checked at trace time)."""
    if tuple(x.shape) != tuple(expected):
        raise ValueError(f"{argument} has shape {tuple(x.shape)}; expected {tuple(expected)}")


def batch_time(t: Any, batch: int, argument: str = "t") -> jax.Array:
    """Broadcasts a scalar or `[B]` time to a float32 `[B]` array, checking shape and range."""
    check_time(t, argument)
    t = jnp.asarray(t, dtype=jnp.float32)
    if t.ndim == 0:
        return jnp.full((batch,), t)
    if t.shape != (batch,):
        raise ValueError(f"{argument} must be a scalar or have shape ({batch},), got {t.shape}")
    return t
