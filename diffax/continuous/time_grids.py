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
from diffax.core.arrays import TINY

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
    num_steps: int,
    *,
    t_min: float,
    t_max: float = 1.0,
    grid: str = "uniform",
    rho: float = 7.0,
) -> jax.Array:
    """A decreasing grid of `num_steps + 1` float32 times from `t_max` to `t_min`.

    Args:
      process: the Gaussian process (used by the logSNR and Karras grids).
      num_steps: number of intervals N >= 1 (static).
      t_min: last time, in [0, t_max).
      t_max: first time, in (t_min, 1].
      grid: one of `GRIDS.names()`: "uniform", "logsnr", "karras", "quadratic".
      rho: Karras exponent (EDM uses 7).

    Returns:
      `[N + 1]` float32 times with exact endpoints.
    """
    num_steps = check_positive_int(num_steps, "num_steps")
    fn = GRIDS.get(grid, "grid")
    check_time(t_min, "t_min")
    check_time(t_max, "t_max")
    if is_concrete(t_min) and is_concrete(t_max) and not float(t_min) < float(t_max):
        raise ValueError(f"t_min must be < t_max, got t_min={t_min}, t_max={t_max}")
    t_min = jnp.asarray(t_min, jnp.float32)
    t_max = jnp.asarray(t_max, jnp.float32)
    u = jnp.arange(num_steps + 1, dtype=jnp.float32) / num_steps
    ts = fn(process, u, t_min, t_max, rho)
    # The inverse logSNR is only accurate to float32 rounding: pin the endpoints exactly.
    return ts.at[0].set(t_max).at[-1].set(t_min)
