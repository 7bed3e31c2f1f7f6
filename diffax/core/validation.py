"""Argument checks that fail early with a message naming the argument and the allowed values.

Checks on *values* (time in [0, 1], token ids in range) run when the value is concrete (a Python
number, NumPy array or a committed JAX array outside `jit`); under tracing only shapes and dtypes
can be checked, so those checks run at trace time and value checks are skipped there.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from diffax.core.arrays import float_dtype


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
    t = jnp.asarray(t, dtype=float_dtype())
    if t.ndim == 0:
        return jnp.full((batch,), t)
    if t.shape != (batch,):
        raise ValueError(f"{argument} must be a scalar or have shape ({batch},), got {t.shape}")
    return t


def is_number(x: Any) -> bool:
    """True for a Python or NumPy real scalar (not a bool, array, tracer or placeholder object).

    Constructors check only such values: pytree unflattening (`jit`, `vmap`, `tree_map`) rebuilds
    objects from tracers, arrays or sentinels, which must pass through unchecked.
    """
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def check_number(
    value: Any,
    argument: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = True,
    high_open: bool = True,
    float32: bool = False,
) -> None:
    """Raises `ValueError` unless a Python/NumPy number lies in the stated interval.

    The interval is (low, high) with each end open or closed as given; `None` is unbounded (the
    value must still be finite). With `float32=True` the value must also stay finite and, if
    nonzero, normal when rounded to float32 (the precision every computation runs in). Values
    that are not numbers (tracers, arrays) are skipped: see `is_number`.
    """
    if not is_number(value):
        return
    lo = "(-inf" if low is None else ("(" if low_open else "[") + f"{low:g}"
    hi = "inf)" if high is None else f"{high:g}" + (")" if high_open else "]")
    ok = math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if ok and float32:
        v32 = abs(float(np.float32(value)))
        ok = math.isfinite(v32) and (value == 0 or v32 >= np.finfo(np.float32).tiny)
        if not ok:
            raise ValueError(
                f"{argument} must be a finite, normal float32 number in {lo}, {hi}; got {value}"
            )
    if not ok:
        raise ValueError(f"{argument} must be a finite number in {lo}, {hi}; got {value}")


def check_ordered(
    low_value: Any, low_name: str, high_value: Any, high_name: str, *, strict: bool = True
) -> None:
    """Raises `ValueError` unless `low_value < high_value` (`<=` if not strict); numbers only."""
    if not (is_number(low_value) and is_number(high_value)):
        return
    ok = low_value < high_value if strict else low_value <= high_value
    if not ok:
        op = "<" if strict else "<="
        raise ValueError(
            f"{low_name} must be {op} {high_name}; got {low_name}={low_value}, "
            f"{high_name}={high_value}"
        )


def check_time_range(t_min: Any, t_max: Any) -> None:
    """Checks `0 <= t_min < t_max <= 1` for concrete bounds (a `ValueError` naming the bound)."""
    check_time(t_min, "t_min")
    check_time(t_max, "t_max")
    if is_concrete(t_min) and is_concrete(t_max):
        lo, hi = np.asarray(t_min), np.asarray(t_max)
        if lo.size and hi.size and not np.all(lo < hi):
            raise ValueError(
                f"t_min must be < t_max (times are drawn from [t_min, t_max] within [0, 1]); got "
                f"t_min={t_min}, t_max={t_max}"
            )


def check_ndim(
    x: Any, argument: str, layout: str, *, ndim: int | None = None, min_ndim: int = 0
) -> None:
    """Raises `ValueError` unless `x` has exactly `ndim` (or at least `min_ndim`) dimensions.

    `layout` names the expected layout in the message, e.g. "[B, L]" or "[B, ...]".
    """
    shape = tuple(np.shape(x)) if not hasattr(x, "shape") else tuple(x.shape)
    if (ndim is not None and len(shape) != ndim) or len(shape) < min_ndim:
        raise ValueError(f"{argument} has shape {shape}; expected {layout}")


def concrete_or_none(fn: Callable[..., Any], *args: Any) -> Any:
    """`fn(*args)` as NumPy values when every input leaf is concrete, else None.

    Evaluated with `jax.ensure_compile_time_eval`, so it also works inside `jit` for values that
    are compile-time constants (Python floats, static schedules, closed-over processes). Used to
    decide, at trace time, whether a concrete argument lies at a singular point. Array leaves
    of `args` reach `fn` as JAX arrays of their own dtype (Python floats as weak float32).
    """
    if not all(is_concrete(leaf) for leaf in jax.tree_util.tree_leaves(args)):
        return None
    # Arrays are made inside the block: `jnp.asarray` of a Python float under `jit` is a tracer.
    with jax.ensure_compile_time_eval():
        args = jax.tree_util.tree_map(jnp.asarray, args)
        out = fn(*args)
    leaves = jax.tree_util.tree_leaves(out)
    if not all(is_concrete(leaf) for leaf in leaves):
        return None
    return jax.tree_util.tree_map(np.asarray, out)


class UnknownOptionError(ValueError, TypeError):
    """An option name that the callee does not accept.

    A `ValueError` (the design's "unknown key" error) that is also a `TypeError` (what Python
    raises for an unexpected keyword argument), so code catching either keeps working.
    """


def check_options(options: Iterable[str], allowed: Sequence[str], owner: str) -> None:
    """Raises `UnknownOptionError` naming the unknown option names and listing `allowed`.

    `owner` names the callee in the message, e.g. "sampler 'ddim'".
    """
    unknown = [name for name in options if name not in allowed]
    if unknown:
        names = ", ".join(map(repr, unknown))
        raise UnknownOptionError(
            f"unknown option{'s' if len(unknown) > 1 else ''} {names} for {owner}; allowed "
            f"options: {', '.join(allowed)}"
        )


def check_finite(value: Any, argument: str, context: str = "") -> None:
    """Raises `ValueError` if a concrete `value` holds NaN or +-inf; tracers are skipped.

    `context` is appended to the message (e.g. where the value was computed).
    """
    if not is_concrete(value):
        return
    arr = np.asarray(value)
    if arr.size and not np.all(np.isfinite(arr)):
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(
            f"{argument} is not finite: {bad} of {arr.size} values are NaN or inf{context}"
        )


def check_time_grid(ts: Any, argument: str = "ts", *, strict: bool = False) -> None:
    """Checks a decreasing time grid `t_max = ts[0] > ... > ts[-1] = t_min` in [0, 1].

    The shape (1-D, at least 2 times) is checked at trace time; the values (in [0, 1], no NaN,
    ts[0] > ts[-1], non-increasing, or strictly decreasing with `strict`) when `ts` is concrete,
    on the host with NumPy, so a concrete grid closed over inside `jit` is checked too.
    """
    shape = tuple(np.shape(ts)) if not hasattr(ts, "shape") else tuple(ts.shape)
    if len(shape) != 1 or shape[0] < 2:
        raise ValueError(f"{argument} must be a 1-D grid of at least 2 times, got shape {shape}")
    if not is_concrete(ts):
        return
    check_time(ts, argument)
    arr = np.asarray(ts)
    if arr.dtype != np.float64:
        arr = arr.astype(np.float32)
    first, last = arr[0], arr[-1]
    # str() of a float32 scalar is its shortest repr (0.001), not the float64 expansion.
    name = [str(v) for v in arr]
    steps = np.diff(arr)
    wrong = steps >= 0 if strict else steps > 0
    if not first > last or np.any(wrong):
        detail = ""
        if first > last:
            i = int(np.argmax(wrong))
            detail = f"; {argument}[{i}] = {name[i]} is followed by {name[i + 1]}"
        raise ValueError(
            f"{argument} must be {'strictly decreasing' if strict else 'non-increasing'} from "
            f"t_max = {argument}[0] down to t_min = {argument}[-1] < t_max; got t_max = "
            f"{argument}[0] = {name[0]}, t_min = {argument}[-1] = {name[-1]}{detail}"
        )
