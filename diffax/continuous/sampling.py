"""`sample`: one entry point that resolves a sampler by name and builds its time grid."""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp

from diffax.continuous.parameterizations import PREDICTIONS, ModelFn
from diffax.continuous.processes import GaussianProcess
from diffax.continuous.samplers import SAMPLERS
from diffax.continuous.time_grids import time_grid
from diffax.core import check_choice, check_positive_int, check_time, is_concrete

# Options every sampler takes; anything else must be a keyword of the chosen sampler.
_COMMON = ("key", "process", "model_fn", "x", "ts", "prediction")


def sample(
    key: jax.Array,
    process: GaussianProcess,
    model_fn: ModelFn,
    shape: tuple[int, ...],
    *,
    sampler: str,
    num_steps: int,
    prediction: str = "eps",
    grid: str | None = None,
    t_min: float | None = None,
    t_max: float | None = None,
    rho: float = 7.0,
    ts: jax.Array | None = None,
    **options,
) -> tuple[jax.Array, dict]:
    """Draws `shape[0]` samples with a registered sampler.

    Args:
      key: PRNG key (split into the prior draw and the sampler's noise).
      process: the Gaussian process the model was trained on.
      model_fn: `(x: [B, ...], t: [B]) -> [B, ...]`, predicting `prediction`.
      shape: `(B, ...)` shape of the samples.
      sampler: a name in `SAMPLERS` ("euler_maruyama", "pc", "ode_euler", "ode_heun", "ddim",
        "dpm_solver_pp_2m", "dpm_solver_pp_3m", "dpm_solver_pp_2s", "edm_heun", "restart",
        "adaptive_ode", "adaptive_sde").
      num_steps: number of grid intervals N >= 1 (ignored by the adaptive samplers except for
        the grid's endpoints).
      prediction: one of "eps", "x0", "v", "score", "velocity".
      grid: named time grid ("uniform", "logsnr", "karras", "quadratic"); default per sampler.
      t_min: final time; default per sampler (see docs/continuous.md).
      t_max: first time; default 1, or `process.sde_t_max` for samplers that need alpha > 0.
      rho: Karras grid exponent.
      ts: an explicit `[N + 1]` decreasing grid, overriding grid/t_min/t_max/num_steps.
      **options: sampler-specific keywords (e.g. `eta`, `denoise`, `s_churn`, `rtol`).

    Returns:
      `(samples [B, ...], info)` with `info["nfe"]` the network evaluations made.
      Reference: Song et al. 2021, SDEs (sampling API of score_sde, by name).
    """
    spec = SAMPLERS.get(sampler, "sampler")
    check_choice(prediction, PREDICTIONS, "prediction")
    num_steps = check_positive_int(num_steps, "num_steps")
    if not (isinstance(shape, tuple) and shape and all(isinstance(n, int) for n in shape)):
        raise TypeError(f"shape must be a non-empty tuple of ints (batch first), got {shape!r}")
    allowed = [p for p in inspect.signature(spec.fn).parameters if p not in _COMMON]
    for name in options:
        if name not in allowed:
            raise TypeError(
                f"unknown option {name!r} for sampler {sampler!r}; allowed options: "
                f"{', '.join(allowed)}"
            )
    if ts is None:
        t_min = spec.t_min if t_min is None else t_min
        if t_max is None:
            t_max = process.sde_t_max if spec.uses_sde_t_max else 1.0
        ts = time_grid(
            process, num_steps, t_min=t_min, t_max=t_max, grid=grid or spec.grid, rho=rho
        )
    else:
        ts = jnp.asarray(ts, jnp.float32)
        if ts.ndim != 1 or ts.shape[0] < 2:
            raise ValueError(f"ts must be a 1-D grid of at least 2 times, got shape {ts.shape}")
        check_time(ts, "ts")
        if is_concrete(ts) and not bool(jnp.all(jnp.diff(ts) < 0)):
            raise ValueError("ts must be strictly decreasing (from t_max to t_min)")
    key_prior, key_sampler = jax.random.split(key)
    x = process.prior_sample(key_prior, shape, t=ts[0])
    return spec.fn(key_sampler, process, model_fn, x, ts, prediction=prediction, **options)
