"""Samplers for discrete diffusion: one signature, one registry, one entry point (`sample`).

| name | method | processes | reference |
|---|---|---|---|
| "ancestral" | posterior q(x_s given x_t, x_0) under the denoiser | all | Austin 2021; Sahoo 2024 |
| "tau_leaping" | Poisson jumps from frozen reverse rates | all | Campbell 2022 |
| "euler" | first-order CTMC step | all | Campbell 2022; Lou 2024 |
| "analytic" | Tweedie step from the concrete score | all | Lou 2024 |
| "first_hitting" | exact next-reveal times, one token per call | Masked | Zheng 2024 |
| "pc" | predictor + corrector (reverse + forward rates) | all | Campbell 2022 |
| "remdm" | remasking posterior | Masked | Wang 2025 |
| "confidence" | most-confident-first, semi-AR blocks | Masked | Chang 2022; Nie 2025 |
"""

from __future__ import annotations

from typing import Any

import jax

from diffax.core import check_positive_int
from diffax.core.validation import check_options
from diffax.discrete.parameterizations import ModelFn, check_prediction
from diffax.discrete.processes import Process
from diffax.discrete.samplers.analytic import analytic
from diffax.discrete.samplers.ancestral import ancestral
from diffax.discrete.samplers.confidence import confidence
from diffax.discrete.samplers.first_hitting import first_hitting
from diffax.discrete.samplers.pc import pc
from diffax.discrete.samplers.rates import euler, euler_logits, tau_leaping, tau_leaping_logits
from diffax.discrete.samplers.registry import sampler_options as sampler_options_of
from diffax.discrete.samplers.registry import samplers, time_grid
from diffax.discrete.samplers.remdm import remdm


def sampler_options(sampler: str) -> tuple[str, ...]:
    """The keyword options `sample` accepts for the registered `sampler`, in signature order.

    Raises an `UnknownOptionError` naming the registered samplers if `sampler` is not one.
    """
    fn = samplers.get(sampler, "sampler")
    return tuple(p for p in sampler_options_of(fn) if p not in ("num_steps", "prediction"))


def sample(
    key: jax.Array,
    process: Process,
    model_fn: ModelFn,
    shape: tuple[int, ...],
    *,
    sampler: str,
    num_steps: int,
    prediction: str = "denoiser",
    **options: Any,
) -> tuple[jax.Array, dict[str, Any]]:
    """Draws `shape` tokens from the reverse process with a registered sampler.

    Args:
      key: PRNG key.
      process: the forward process the model was trained on.
      model_fn: `(tokens [B, L] int32, t [B]) -> [B, L, V]` network output.
      shape: `(B, L)`.
      sampler: a registered name (`diffax.discrete.samplers.names()`).
      num_steps: number of reverse steps (>= 1).
      prediction: what `model_fn` outputs: "denoiser" (logits of p(x_0 | x_t)) or
        "concrete_score" (log ratios p_t(y) / p_t(x_t)).
      **options: passed to the sampler (`temperature`, `top_p`, `cache`, `fixed_tokens`,
        `fixed_mask`, and sampler-specific ones); an unknown name is an `UnknownOptionError`
        (a `ValueError` and a `TypeError`) listing the options of that sampler.

    Returns:
      `(tokens [B, L] int32, info)` with `info["nfe"]` the number of network evaluations.
      Positions where the model output was not finite are a `ValueError` in an eager call and
      `-1` under `jit` (see the sampler docstrings and docs/discrete.md).
    """
    fn = samplers.get(sampler, "sampler")
    check_options(options, sampler_options(sampler), f"sampler {sampler!r}")
    check_prediction(prediction)
    check_positive_int(num_steps, "num_steps")
    if len(shape) != 2:
        raise ValueError(f"shape must be (batch, length), got {shape}")
    shape = (check_positive_int(shape[0], "shape[0]"), check_positive_int(shape[1], "shape[1]"))
    return fn(key, process, model_fn, shape, num_steps=num_steps, prediction=prediction, **options)


__all__ = [
    "analytic",
    "ancestral",
    "confidence",
    "euler",
    "euler_logits",
    "first_hitting",
    "pc",
    "remdm",
    "sample",
    "sampler_options",
    "samplers",
    "tau_leaping",
    "tau_leaping_logits",
    "time_grid",
]
