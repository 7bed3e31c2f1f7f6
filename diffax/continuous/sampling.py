"""`sample`: one entry point that resolves a sampler by name and builds its time grid."""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp

from diffax.continuous.parameterizations import PREDICTIONS, ModelFn
from diffax.continuous.processes import GaussianProcess
from diffax.continuous.samplers import SAMPLERS
from diffax.continuous.samplers.base import check_sde_t_max
from diffax.continuous.time_grids import time_grid
from diffax.core import check_choice, check_positive_int, is_concrete
from diffax.core.validation import check_options, check_time_grid

# Options every sampler takes; anything else must be a keyword of the chosen sampler.
_COMMON = ("key", "process", "model_fn", "x", "ts", "prediction")


def sampler_options(sampler: str) -> tuple[str, ...]:
    """The sampler-specific keyword options `sample` accepts for the registered `sampler`.

    Raises an `UnknownOptionError` naming the registered samplers if `sampler` is not one.
    """
    spec = SAMPLERS.get(sampler, "sampler")
    return tuple(p for p in inspect.signature(spec.fn).parameters if p not in _COMMON)


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
      t_max: first time; default 1, or `process.sde_t_max` for samplers that need alpha > 0
        (those refuse a larger t_max with a `ValueError`).
      rho: Karras grid exponent.
      ts: an explicit `[N + 1]` strictly decreasing grid in [0, 1] (a Python sequence, NumPy or
        JAX array, concrete or traced), used instead of grid/t_min/t_max; then `grid`, `t_min`
        and `t_max` must be left unset and `num_steps` must equal N. Its values are checked when
        concrete (also a concrete grid closed over inside `jit`), skipped when traced.
      **options: sampler-specific keywords (e.g. `eta`, `denoise`, `s_churn`, `rtol`); an
        unknown one is an `UnknownOptionError` (a `ValueError` and a `TypeError`) listing them.

    Returns:
      `(samples [B, ...], info)` with `info["nfe"]` the network evaluations made.

    Raises:
      ValueError: on bad arguments, and (eager calls only) when the samples are not finite.
      Under `jit` non-finite samples are returned as they are.
      Reference: Song et al. 2021, SDEs (sampling API of score_sde, by name).
    """
    spec = SAMPLERS.get(sampler, "sampler")
    check_choice(prediction, PREDICTIONS, "prediction")
    num_steps = check_positive_int(num_steps, "num_steps")
    if not (isinstance(shape, tuple) and shape and all(isinstance(n, int) for n in shape)):
        raise TypeError(f"shape must be a non-empty tuple of ints (batch first), got {shape!r}")
    check_options(options, sampler_options(sampler), f"sampler {sampler!r}")
    if ts is None:
        t_min = spec.t_min if t_min is None else t_min
        if t_max is None:
            t_max = process.sde_t_max if spec.uses_sde_t_max else 1.0
        elif spec.uses_sde_t_max and is_concrete(t_max):
            # Checked here too: under jit the grid built below is traced.
            check_sde_t_max(process, [t_max], sampler)
        ts = time_grid(
            process, num_steps, t_min=t_min, t_max=t_max, grid=grid or spec.grid, rho=rho
        )
    else:
        given = [
            n for n, v in (("grid", grid), ("t_min", t_min), ("t_max", t_max)) if v is not None
        ]
        if given:
            raise ValueError(
                f"ts is given, so {', '.join(given)} would be ignored: pass either ts or "
                "grid/t_min/t_max"
            )
        # Checked on the host with NumPy: `bool(jnp...)` fails on a concrete grid inside jit,
        # where jnp operations are traced.
        check_time_grid(ts, "ts", strict=True)
        if len(ts) - 1 != num_steps:
            raise ValueError(
                f"num_steps={num_steps} does not match ts, which has {len(ts) - 1} intervals"
            )
        ts = jnp.asarray(ts, jnp.float32)
    key_prior, key_sampler = jax.random.split(key)
    x = process.prior_sample(key_prior, shape, t=ts[0])
    samples, info = spec.fn(key_sampler, process, model_fn, x, ts, prediction=prediction, **options)
    if is_concrete(samples) and not bool(jnp.all(jnp.isfinite(samples))):
        # Eager calls only (one check after the loop); under jit non-finite samples are returned.
        bad = int(jnp.sum(~jnp.isfinite(samples)))
        raise ValueError(
            f"sampler {sampler!r} produced {bad} non-finite values (NaN or inf): model_fn returned "
            "non-finite outputs or the solver diverged; check the model and the time grid"
        )
    return samples, info
