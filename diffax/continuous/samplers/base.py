"""What every sampler shares: the registry, the sampler record, the final denoising step.

Every sampler has the signature

    sampler(key, process, model_fn, x, ts, *, prediction="eps", denoise=True, **options)
        -> (samples, info)

with `x: [B, ...]` drawn from the prior at `ts[0]`, `ts: [N + 1]` a decreasing time grid (or, for
the adaptive solvers, just its endpoints), and `info["nfe"]` the number of network evaluations
actually made (int32). Every loop is a `lax.scan` or `lax.while_loop`: nothing returns to the host.

Registered samplers check their arguments on entry (`register_sampler`): an unknown option is an
`UnknownOptionError` (a `ValueError` and `TypeError`) listing the allowed ones; `ts` must be 1-D
with at least 2 times (trace time) and, when concrete, lie in [0, 1] and decrease
(ts[0] = t_max > ts[-1] = t_min); samplers that simulate the reverse SDE or work in x/alpha
(`uses_sde_t_max`) refuse t_max > `process.sde_t_max`, where they are singular.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from diffax.continuous.parameterizations import Denoiser
from diffax.core import Registry, is_concrete
from diffax.core.validation import check_options, check_time_grid

SamplerFn = Callable[..., tuple[jax.Array, dict]]


@dataclasses.dataclass(frozen=True)
class SamplerSpec:
    """A registered sampler and its documented defaults.

    Attributes:
      fn: the sampler function (signature in the module docstring).
      t_min: default final time of the grid (documented in docs/continuous.md).
      grid: default named time grid (see `diffax.continuous.time_grids.GRIDS`).
      uses_sde_t_max: whether the default grid starts at `process.sde_t_max` instead of 1: true for
        samplers that simulate the reverse SDE or work in x/alpha, both singular where
        alpha(1) = 0 (RectifiedFlow, Cosine).
      evals_per_step: nominal network evaluations per grid interval, used to turn an NFE budget
        into `num_steps`; `info["nfe"]` reports what was actually spent.
      reference: one-line paper reference.
    """

    fn: SamplerFn
    t_min: float
    grid: str
    uses_sde_t_max: bool
    evals_per_step: float
    reference: str


SAMPLERS: Registry[SamplerSpec] = Registry("sampler")


def check_sde_t_max(process, ts: jax.Array, sampler: str) -> None:
    """Raises `ValueError` if a concrete grid starts after `process.sde_t_max`.

    Where alpha(1) = 0 (RectifiedFlow, Cosine) the reverse SDE's diffusion g(t) and the EDM
    variable x/alpha are infinite at t = 1; samplers that need them would return NaN (or, with
    a floored alpha, overflow) instead of samples.
    """
    if not is_concrete(ts):
        return
    # Compared in float32, the precision grids are built in (float32(0.99) > 0.99).
    t_top = np.float32(process.sde_t_max)
    t_max = np.asarray(ts, np.float32)[0]
    # str() of a float32 scalar is its shortest repr (0.99), not 0.9900000095367432.
    t_top_s, t_max_s = str(t_top), str(t_max)
    if t_max > t_top:
        raise ValueError(
            f"sampler {sampler!r} simulates the reverse SDE or works in x/alpha, which is singular "
            f"for {type(process).__name__} above process.sde_t_max = {t_top_s} (alpha(1) = 0); "
            f"got t_max={t_max_s} (ts[0]). Allowed: t_max in (0, {t_top_s}] (the default), or "
            "an ODE sampler (ode_heun, dpm_solver_pp_2m, ...) from t = 1"
        )


_POSITIONAL = ("key", "process", "model_fn", "x", "ts")


def register_sampler(
    name: str,
    *,
    t_min: float,
    grid: str,
    uses_sde_t_max: bool,
    evals_per_step: float,
    reference: str,
) -> Callable[[SamplerFn], SamplerFn]:
    """Decorator: registers a sampler function under `name` with its defaults.

    The registered (and returned) function checks its arguments before running: unknown
    options, the grid `ts` (see the module docstring) and, if `uses_sde_t_max`, that
    `ts[0] <= process.sde_t_max`. Signature and docstring are those of the wrapped function.
    """

    def decorator(fn: SamplerFn) -> SamplerFn:
        signature = inspect.signature(fn)
        options = [p for p in signature.parameters if p not in _POSITIONAL]

        @functools.wraps(fn)
        def checked(*args, **kwargs):
            check_options(
                [k for k in kwargs if k not in signature.parameters], options, f"sampler {name!r}"
            )
            bound = signature.bind(*args, **kwargs)
            ts = bound.arguments["ts"]
            check_time_grid(ts, "ts")
            if uses_sde_t_max:
                check_sde_t_max(bound.arguments["process"], ts, name)
            bound.arguments["ts"] = jnp.asarray(ts, jnp.float32)
            return fn(*bound.args, **bound.kwargs)

        SAMPLERS.register(name)(
            SamplerSpec(checked, t_min, grid, uses_sde_t_max, evals_per_step, reference)
        )
        return checked

    return decorator


def finish(
    denoiser: Denoiser, x: jax.Array, t: jax.Array, nfe: jax.Array, denoise: bool
) -> tuple[jax.Array, dict]:
    """Optionally replaces `x` at the final time `t` by the x0 prediction (one more NFE).

    The last step of Song et al. 2021 (SDEs, "noise removal") and of DPM-Solver's
    `denoise_to_zero`: removes the residual noise sigma(t_min) left by stopping at t_min > 0.
    """
    if denoise:
        x, _ = denoiser(x, jnp.full((x.shape[0],), t))
        nfe = nfe + 1
    return x, {"nfe": jnp.asarray(nfe, jnp.int32)}
