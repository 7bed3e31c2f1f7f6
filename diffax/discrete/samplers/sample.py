"""The convenience entry point: `sample(..., sampler=<name or Step>, num_steps, **options)`."""

from __future__ import annotations

from typing import Any

import jax

from diffax.core import check_positive_int
from diffax.core.validation import check_options
from diffax.discrete.parameterizations import ModelFn
from diffax.discrete.processes import Process
from diffax.discrete.samplers.grids import GRIDS
from diffax.discrete.samplers.loop import check_sample_shape, run_steps
from diffax.discrete.samplers.registry import SAMPLERS, factory_options
from diffax.discrete.samplers.step import Step

#: Options of the loop and the model wrapper, accepted with every sampler.
LOOP_OPTIONS = ("temperature", "top_p", "cache", "fixed_tokens", "fixed_mask", "ts", "trajectory")


def sampler_options(sampler: str | Step) -> tuple[str, ...]:
    """Every keyword option `sample` accepts with `sampler`: factory keywords, then loop options.

    `sampler` is a registered name or a `Step` (which takes only the loop options: its
    hyper-parameters are already bound). An unknown name is a `ValueError` listing the
    registered samplers.
    """
    if isinstance(sampler, Step):
        return LOOP_OPTIONS
    return factory_options(SAMPLERS.get(sampler, "sampler")) + LOOP_OPTIONS


def sample(
    key: jax.Array,
    process: Process,
    model_fn: ModelFn,
    shape: tuple[int, ...],
    *,
    sampler: str | Step,
    num_steps: int,
    prediction: str = "denoiser",
    **options: Any,
) -> tuple[jax.Array, dict[str, Any]]:
    """Draws `shape` tokens from the reverse process.

    Args:
      key: PRNG key.
      process: the forward process the model was trained on.
      model_fn: `(tokens [B, L] int32, t [B]) -> [B, L, V]` network output.
      shape: `(B, L)`.
      sampler: a registered name (`diffax.discrete.SAMPLERS.names()`), built from its factory
        with the factory's options, or a `Step` object (e.g. `pc(predictor=ancestral())`, or
        your own).
      num_steps: number of grid intervals (>= 1) of the sampler's default grid (`Step.grid`:
        the uniform `time_grid(num_steps)` for all but `first_hitting`, which has one interval
        per token whatever `num_steps` is), unless `ts` is given.
      prediction: what `model_fn` outputs: "denoiser" (logits of p(x_0 | x_t)) or
        "concrete_score" (log ratios p_t(y) / p_t(x_t)).
      **options: the sampler factory's options (e.g. `eta` for "remdm"), and for every sampler
        `temperature`, `top_p`, `cache`, `fixed_tokens`, `fixed_mask`, `trajectory` (see
        `run_steps`) and `ts` (an explicit `[num_steps + 1]` decreasing grid ending at 0). An
        unknown name is an `UnknownOptionError` (a `ValueError` and a `TypeError`) listing the
        allowed options (`sampler_options(sampler)`).

    Returns:
      `(tokens [B, L] int32, info)` with `info["nfe"]` the number of network evaluations (and
      `info["trajectory"]` `[N + 1, B, L]` with `trajectory=True`). Positions where the model
      output was not finite are a `ValueError` in an eager call and `-1` under `jit`.
    """
    allowed = sampler_options(sampler)
    name = sampler.name if isinstance(sampler, Step) else sampler
    check_options(options, allowed, f"sampler {name!r}")
    check_positive_int(num_steps, "num_steps")
    shape = check_sample_shape(shape)
    if isinstance(sampler, Step):
        step = sampler
    else:
        factory = SAMPLERS.get(sampler, "sampler")
        bound = {k: options.pop(k) for k in factory_options(factory) if k in options}
        step = factory(**bound)
    ts = options.pop("ts", None)
    if ts is None:
        ts = GRIDS.get(step.grid, f"grid of sampler {name!r}")(num_steps, shape)
    elif len(ts) != num_steps + 1:
        raise ValueError(f"ts has {len(ts)} times; num_steps={num_steps} needs num_steps + 1")
    return run_steps(key, step, process, model_fn, shape, ts, prediction=prediction, **options)
