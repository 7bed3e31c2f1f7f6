"""What every sampler shares: the registry, the sampler record, the final denoising step.

Every sampler has the signature

    sampler(key, process, model_fn, x, ts, *, prediction="eps", denoise=True, **options)
        -> (samples, info)

with `x: [B, ...]` drawn from the prior at `ts[0]`, `ts: [N + 1]` a decreasing time grid (or, for
the adaptive solvers, just its endpoints), and `info["nfe"]` the number of network evaluations
actually made (int32). Every loop is a `lax.scan` or `lax.while_loop`: nothing returns to the host.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from diffax.continuous.parameterizations import Denoiser
from diffax.core import Registry

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


def register_sampler(
    name: str,
    *,
    t_min: float,
    grid: str,
    uses_sde_t_max: bool,
    evals_per_step: float,
    reference: str,
) -> Callable[[SamplerFn], SamplerFn]:
    """Decorator: registers a sampler function under `name` with its defaults."""

    def decorator(fn: SamplerFn) -> SamplerFn:
        SAMPLERS.register(name)(
            SamplerSpec(fn, t_min, grid, uses_sde_t_max, evals_per_step, reference)
        )
        return fn

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
