"""`sample`: one entry point that resolves a sampler (a name or a `Step`), builds its time grid
and runs it with `run_steps`."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from diffax.continuous.parameterizations import PREDICTIONS, ModelFn
from diffax.continuous.processes import GaussianProcess
from diffax.continuous.samplers.loop import check_sde_t_max, run_steps
from diffax.continuous.samplers.registry import SAMPLERS, factory_options
from diffax.continuous.samplers.step import Step, resolve_t_min
from diffax.continuous.time_grids import time_grid
from diffax.core import check_choice, check_positive_int, is_concrete
from diffax.core.arrays import float_dtype
from diffax.core.validation import check_options, check_time_grid

# Options of `run_steps` that `sample` passes through, whatever the sampler.
LOOP_OPTIONS = ("denoise", "trajectory")


def sampler_options(sampler: str | Step) -> tuple[str, ...]:
    """Every keyword option `sample` accepts for `sampler` besides its own named arguments.

    For a registered name: the factory's hyper-parameters, then `LOOP_OPTIONS`; for a `Step`
    object: `LOOP_OPTIONS` only. Raises a `ValueError` naming the registered samplers if
    `sampler` is an unknown name.
    """
    if isinstance(sampler, Step):
        return LOOP_OPTIONS
    return factory_options(SAMPLERS.get(sampler, "sampler")) + LOOP_OPTIONS


def resolve_sampler(sampler: str | Step, options: dict[str, Any]) -> tuple[Step, dict[str, Any]]:
    """`(step, loop options)` from a sampler name or `Step` and `sample`'s extra `options`.

    A name is looked up in `SAMPLERS` and its factory called with the options it takes; the
    rest must be `LOOP_OPTIONS`. An unknown option is an `UnknownOptionError` listing all allowed.
    """
    if not isinstance(sampler, (str, Step)):
        raise TypeError(
            "sampler must be a name in SAMPLERS ("
            f"{', '.join(SAMPLERS.names())}) or a diffax.continuous.Step, got "
            f"{type(sampler).__name__}"
        )
    owner = f"sampler {sampler!r}" if isinstance(sampler, str) else f"step {sampler.name!r}"
    check_options(options, sampler_options(sampler), owner)
    loop = {k: v for k, v in options.items() if k in LOOP_OPTIONS}
    if isinstance(sampler, Step):
        return sampler, loop
    hyper = {k: v for k, v in options.items() if k not in LOOP_OPTIONS}
    return SAMPLERS.get(sampler, "sampler")(**hyper), loop


def sample(
    key: jax.Array,
    process: GaussianProcess,
    model_fn: ModelFn,
    shape: tuple[int, ...],
    *,
    sampler: str | Step,
    num_steps: int | jax.Array,
    prediction: str = "eps",
    grid: str | None = None,
    t_min: float | None = None,
    t_max: float | None = None,
    rho: float = 7.0,
    ts: jax.Array | None = None,
    max_steps: int | None = None,
    **options,
) -> tuple[jax.Array, dict]:
    """Draws `shape[0]` samples with a sampler given by name or as a `Step`.

    Compiles once per grid length: under `jit`, `ts`, `t_min`, `t_max` and (with `max_steps`)
    `num_steps` may be traced, so a new grid or a new step count reuses the compiled sampler.

    Args:
      key: PRNG key (split into the prior draw and the sampler's noise).
      process: the Gaussian process the model was trained on.
      model_fn: `(x: [B, ...], t: [B]) -> [B, ...]`, predicting `prediction`.
      shape: `(B, ...)` shape of the samples.
      sampler: a name in `SAMPLERS` ("euler_maruyama", "pc", "ode_euler", "ode_heun", "ddim",
        "dpm_solver_pp_2m", "dpm_solver_pp_3m", "dpm_solver_pp_2s", "unipc", "deis", "edm_heun",
        "restart", "adaptive_ode", "adaptive_sde"), or a `Step` (e.g.
        `samplers.pc(predictor=...)`, or one written by the user); its defaults (grid, t_min,
        uses_sde_t_max, to_zero) apply.
      num_steps: number of grid intervals N >= 1 (ignored by the adaptive samplers except for
        the grid's endpoints). For samplers with `to_zero` (ddim, DPM-Solver++, UniPC, DEIS,
        edm_heun) the last interval goes to t = 0 and N intervals cost N evaluations (edm_heun:
        2N - 1); the others end at t_min and add one denoising evaluation. A traced int32 is
        allowed with `max_steps`.
      prediction: one of "eps", "x0", "v", "score", "velocity".
      grid: named time grid ("uniform", "logsnr", "karras", "quadratic"); default per sampler.
      t_min: last nonzero time of the grid; default per sampler (see docs/continuous.md).
      t_max: first time; default 1, or `process.sde_t_max` for samplers that need alpha > 0
        (those refuse a larger t_max with a `ValueError`).
      rho: Karras grid exponent.
      ts: an explicit `[N + 1]` strictly decreasing grid in [0, 1] (a Python sequence, NumPy or
        JAX array, concrete or traced), used instead of grid/t_min/t_max; then `grid`, `t_min`
        and `t_max` must be left unset and `num_steps` must equal N (with `max_steps`: `ts` has
        `max_steps + 1` entries and only the first `num_steps + 1` are used). Its values are
        checked when concrete (also a concrete grid closed over inside `jit`), skipped when
        traced.
      max_steps: a bucket size: the grid is padded to `max_steps + 1` times and the loop is a
        `while_loop` over the first `num_steps` steps, so every `num_steps <= max_steps` (traced
        or not) reuses one compiled sampler; results equal those without `max_steps`.
      **options: for a name, its factory's hyper-parameters (e.g. `eta`, `s_churn`, `rtol`);
        for any sampler, the `run_steps` options `denoise` (default: True unless the sampler
        steps to t = 0; True with such a sampler ends its grid at t_min and adds the final x0
        prediction, one NFE) and `trajectory` (default False). An unknown one is an
        `UnknownOptionError` (a `ValueError` and a `TypeError`) listing them
        (`sampler_options`).

    Returns:
      `(samples [B, ...], info)` with `info["nfe"]` the network evaluations made and, with
      `trajectory=True`, `info["trajectory"]` `[N + 1, B, ...]` (see `run_steps`).

    Raises:
      ValueError: on bad arguments, and (eager calls only) when the samples are not finite.
      Under `jit` non-finite samples are returned as they are.
      Reference: Song et al. 2021, SDEs (sampling API of score_sde, by name).
    """
    check_choice(prediction, PREDICTIONS, "prediction")
    if max_steps is None or is_concrete(num_steps):
        num_steps = check_positive_int(num_steps, "num_steps")
    if max_steps is not None:
        max_steps = check_positive_int(max_steps, "max_steps")
        if is_concrete(num_steps) and num_steps > max_steps:
            raise ValueError(
                f"num_steps={num_steps} exceeds max_steps={max_steps}: allowed 1 <= num_steps "
                "<= max_steps"
            )
    if not (isinstance(shape, tuple) and shape and all(isinstance(n, int) for n in shape)):
        raise TypeError(f"shape must be a non-empty tuple of ints (batch first), got {shape!r}")
    step, loop_options = resolve_sampler(sampler, options)
    denoise = loop_options.get("denoise")
    to_zero = step.to_zero and not denoise
    if ts is None:
        t_min = resolve_t_min(step, num_steps) if t_min is None else t_min
        if t_max is None:
            t_max = process.sde_t_max if step.uses_sde_t_max else 1.0
        elif step.uses_sde_t_max and is_concrete(t_max):
            # Checked here too: under jit the grid built below is traced.
            check_sde_t_max(process, [t_max], step.name)
        ts = time_grid(
            process,
            num_steps,
            t_min=t_min,
            t_max=t_max,
            grid=grid or step.grid,
            rho=rho,
            to_zero=to_zero,
            max_steps=max_steps,
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
        check_time_grid(ts, "ts", strict=max_steps is None)
        expected = num_steps if max_steps is None else max_steps
        if len(ts) - 1 != expected:
            what = "num_steps" if max_steps is None else "max_steps"
            raise ValueError(
                f"{what}={expected} does not match ts, which has {len(ts) - 1} intervals"
            )
        ts = jnp.asarray(ts, float_dtype())
    key_prior, key_sampler = jax.random.split(key)
    x = process.prior_sample(key_prior, shape, t=ts[0])
    samples, info = run_steps(
        key_sampler,
        step,
        process,
        model_fn,
        x,
        ts,
        prediction=prediction,
        num_steps=None if max_steps is None else num_steps,
        **loop_options,
    )
    if is_concrete(samples) and not bool(jnp.all(jnp.isfinite(samples))):
        # Eager calls only (one check after the loop); under jit non-finite samples are returned.
        bad = int(jnp.sum(~jnp.isfinite(samples)))
        raise ValueError(
            f"sampler {step.name!r} produced {bad} non-finite values (NaN or inf): model_fn "
            "returned non-finite outputs or the solver diverged; check the model and the time grid"
        )
    return samples, info
