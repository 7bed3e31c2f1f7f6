"""Decreasing time grids `t_max = t_0 > t_1 > ... > t_N = t_min` for the samplers.

A grid is built in the quantity its method spaces uniformly and mapped back to t with the process's
inverse logSNR, so the same named grid works for every process.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from diffax.continuous.processes import GaussianProcess
from diffax.core import Registry, check_positive_int, check_time, is_concrete
from diffax.core.arrays import TINY, float_dtype

GridFn = Callable[[GaussianProcess, jax.Array, jax.Array, jax.Array, float], jax.Array]
GRIDS: Registry[GridFn] = Registry("time grid")


@GRIDS.register("uniform")
def _uniform(process, u, t_min, t_max, rho):
    """Uniform in t (Song et al. 2021, SDEs)."""
    return t_max + u * (t_min - t_max)


@GRIDS.register("quadratic")
def _quadratic(process, u, t_min, t_max, rho):
    """Quadratic in t, dense near t_min (Song et al. 2021, DDIM, appendix D.2)."""
    return t_min + (t_max - t_min) * (1.0 - u) ** 2


def _spacing_t_max(process, t_max):
    """Where logSNR-based spacing starts: at most `process.sde_t_max`.

    For paths with alpha(1) = 0 (rectified flow, cosine) logSNR(1) = -inf: spacing from there
    would put every grid point but the last at t ~ 1. The grid still starts at `t_max` (pinned by
    `time_grid`); its first interval simply spans [t(lambda_1), t_max].
    """
    return jnp.minimum(t_max, process.sde_t_max)


@GRIDS.register("logsnr")
def _logsnr(process, u, t_min, t_max, rho):
    """Uniform in logSNR (Lu et al. 2022, DPM-Solver, section 3.3)."""
    lam_hi, lam_lo = process.log_snr(t_min), process.log_snr(_spacing_t_max(process, t_max))
    return process.t_from_log_snr(lam_lo + u * (lam_hi - lam_lo))


@GRIDS.register("karras")
def _karras(process, u, t_min, t_max, rho):
    """Uniform in (sigma/alpha)^(1/rho) (Karras et al. 2022, EDM, eq. 5)."""
    s_max = jnp.exp(-0.5 * process.log_snr(_spacing_t_max(process, t_max))) ** (1.0 / rho)
    s_min = jnp.exp(-0.5 * process.log_snr(t_min)) ** (1.0 / rho)
    sig = (s_max + u * (s_min - s_max)) ** rho
    return process.t_from_log_snr(-2.0 * jnp.log(jnp.maximum(sig, TINY)))


def time_grid(
    process: GaussianProcess,
    num_steps: int | jax.Array,
    *,
    t_min: float,
    t_max: float = 1.0,
    grid: str = "uniform",
    rho: float = 7.0,
    to_zero: bool = False,
    max_steps: int | None = None,
) -> jax.Array:
    """A decreasing grid of `num_steps + 1` times from `t_max` down to `t_min` (or to 0).

    Times are in JAX's default float dtype: float32, or float64 when `jax_enable_x64` is on.

    Args:
      process: the Gaussian process (used by the logSNR and Karras grids).
      num_steps: number of intervals N >= 1: a Python int, or (only with `max_steps`) a traced
        int32 scalar, so that one compiled sampler serves every N <= `max_steps`.
      t_min: last time of the spaced part, in [0, t_max); with `to_zero` the last nonzero time,
        from which the final interval goes to t = 0 (t_min = 0: the named spacing itself ends at
        0, the same grid as without `to_zero`).
      t_max: first time, in (t_min, 1].
      grid: one of `GRIDS.names()`: "uniform", "logsnr", "karras", "quadratic".
      rho: Karras exponent (EDM uses 7).
      to_zero: end at t = 0: the first N - 1 intervals span [t_max, t_min] with the named
        spacing and the last one goes from t_min to 0 (DPM-Solver++ / diffusers'
        `final_sigmas_type="zero"`, EDM's t_N = 0), for samplers whose update is exact there.
      max_steps: pad the grid to `max_steps + 1` entries by repeating its final time (a "bucket":
        the loop runs only the first N steps, see `run_steps(num_steps=...)`). Needed when
        `num_steps` is traced; must be >= a concrete `num_steps`.

    Returns:
      `[N + 1]` times (`[max_steps + 1]` with `max_steps`) with exact endpoints.

    Reference: Song et al. 2021 (uniform), Lu et al. 2022 (logSNR), Karras et al. 2022 (rho).
    """
    fn = GRIDS.get(grid, "grid")
    if max_steps is None:
        num_steps = check_positive_int(num_steps, "num_steps")
        size = num_steps
    else:
        size = check_positive_int(max_steps, "max_steps")
        if is_concrete(num_steps):
            num_steps = check_positive_int(num_steps, "num_steps")
            if num_steps > size:
                raise ValueError(
                    f"num_steps={num_steps} exceeds max_steps={size}: allowed 1 <= num_steps <= "
                    "max_steps"
                )
        elif not jnp.issubdtype(jnp.result_type(num_steps), jnp.integer):
            raise TypeError(f"num_steps must be an integer, got dtype {jnp.result_type(num_steps)}")
    check_time(t_min, "t_min")
    check_time(t_max, "t_max")
    if is_concrete(t_min) and is_concrete(t_max) and not float(t_min) < float(t_max):
        raise ValueError(f"t_min must be < t_max, got t_min={t_min}, t_max={t_max}")
    if to_zero and is_concrete(t_min) and float(t_min) == 0:
        to_zero = False  # the named spacing itself ends at t = 0
    dtype = float_dtype()
    t_min = jnp.asarray(t_min, dtype)
    t_max = jnp.asarray(t_max, dtype)
    n = jnp.asarray(num_steps, jnp.int32)
    spaced = jnp.maximum(n - 1, 1) if to_zero else n  # intervals of the named spacing
    j = jnp.arange(size + 1)
    u = jnp.minimum(j.astype(dtype) / spaced.astype(dtype), 1.0)
    ts = fn(process, u, t_min, t_max, rho).astype(dtype)
    # The inverse logSNR is only accurate to rounding: pin the endpoints exactly.
    ts = jnp.where(j >= spaced, t_min, ts)
    ts = jnp.where(j == 0, t_max, ts)
    if to_zero:
        ts = jnp.where(j >= n, jnp.zeros((), dtype), ts)
    return ts
