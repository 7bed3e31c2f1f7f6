"""Denoising score matching: weightings and time samplers as factories, and the loss.

* `weightings.py`: `Weighting`, the factories `eps`, `simple`, `x0`, `v`, `flow_matching`,
  `likelihood`, `snr(gamma)`, `edm(sigma_data)` and the `WEIGHTINGS` registry;
* `time_samplers.py`: `TimeSampler`, the factories `uniform`, `stratified`, `antithetic`,
  `importance`, `lognormal(mean, std)`, the `TIME_SAMPLERS` registry and `sample_times`;
* `dsm.py`: `dsm_loss` and `loss_weight`, exact at t = 0 and t = 1;
* `named.py`: the lookup of a name and its options (strict: unknown options are errors).
"""

from diffax.continuous.losses import time_samplers, weightings
from diffax.continuous.losses.dsm import dsm_loss, loss_weight, weighting_from
from diffax.continuous.losses.time_samplers import (
    TIME_SAMPLERS,
    TimeSampler,
    sample_times,
    time_sampler_from,
)
from diffax.continuous.losses.weightings import WEIGHTINGS, Weighting

__all__ = [
    "TIME_SAMPLERS",
    "WEIGHTINGS",
    "TimeSampler",
    "Weighting",
    "dsm_loss",
    "loss_weight",
    "sample_times",
    "time_sampler_from",
    "time_samplers",
    "weighting_from",
    "weightings",
]
