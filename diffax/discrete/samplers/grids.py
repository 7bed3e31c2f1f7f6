"""Decreasing time grids `1 = t_0 > t_1 > ... > t_N = 0` for the discrete samplers.

`GRIDS` maps the name a `Step` declares as its default (`Step.grid`) to
`grid(num_steps, shape) -> ts [N + 1]`; `sample` builds that grid when no explicit `ts` is given.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from diffax.core import Registry, check_positive_int, is_concrete
from diffax.core.validation import check_time_grid

GridFn = Callable[[int, tuple[int, int]], jax.Array]
GRIDS: Registry[GridFn] = Registry("time grid")


def time_grid(num_steps: int) -> jax.Array:
    """`num_steps + 1` uniform decreasing times 1 = t_0 > ... > t_N = 0. Float32 `[N + 1]`."""
    num_steps = check_positive_int(num_steps, "num_steps")
    return jnp.linspace(1.0, 0.0, num_steps + 1, dtype=jnp.float32)


@GRIDS.register("uniform")
def _uniform(num_steps: int, shape: tuple[int, int]) -> jax.Array:
    """`time_grid(num_steps)`."""
    return time_grid(num_steps)


@GRIDS.register("per_token")
def _per_token(num_steps: int, shape: tuple[int, int]) -> jax.Array:
    """One interval per token, `time_grid(L)`, whatever `num_steps` is (`first_hitting`)."""
    return time_grid(shape[1])


def check_grid(ts: Any) -> jax.Array:
    """Checks `ts` (1-D, strictly decreasing, in [0, 1], ending at 0); returns float32 `[N + 1]`.

    The values are checked when `ts` is concrete (also a concrete grid closed over in `jit`).
    """
    check_time_grid(ts, "ts", strict=True)
    if is_concrete(ts) and float(np.asarray(ts)[-1]) != 0.0:
        raise ValueError(
            f"ts must end at t = 0 (the last interval draws x_0 from the denoiser), got "
            f"ts[-1] = {float(np.asarray(ts)[-1])}"
        )
    return jnp.asarray(ts, jnp.float32)
