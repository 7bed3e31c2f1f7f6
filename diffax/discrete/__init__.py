"""Discrete (CTMC) diffusion: processes, schedules, losses, samplers, likelihood. Pure JAX.

Conventions: tokens are int32 in [0, V); t in [0, 1] with t = 0 clean and t = 1 the prior;
row-stochastic transition matrices (p_t = p_0 @ P(t)); `model_fn(tokens [B, L], t [B]) ->
[B, L, V]`; results in nats unless the name says bits.
"""

from diffax.discrete.categorical import (
    INVALID_TOKEN,
    apply_temperature,
    sample_categorical,
    top_p_filter,
)
from diffax.discrete.enumeration import EnumeratedTarget
from diffax.discrete.likelihood import bits_per_token, elbo
from diffax.discrete.losses import (
    antithetic_times,
    ctmc_elbo,
    flow_matching_ce,
    loss_fn,
    losses,
    masked_elbo,
    score_entropy,
)
from diffax.discrete.parameterizations import (
    PREDICTIONS,
    denoiser_to_score,
    reverse_rates,
    score_to_denoiser,
    time_free,
)
from diffax.discrete.processes import General, Masked, Process, Uniform, processes
from diffax.discrete.samplers import (
    analytic,
    ancestral,
    confidence,
    euler,
    first_hitting,
    pc,
    remdm,
    sample,
    sampler_options,
    samplers,
    tau_leaping,
)
from diffax.discrete.schedules import (
    CosineSchedule,
    GeometricSchedule,
    LinearSchedule,
    LogLinearSchedule,
    PolynomialSchedule,
    Schedule,
    schedules,
)

__all__ = [
    "INVALID_TOKEN",
    "PREDICTIONS",
    "CosineSchedule",
    "EnumeratedTarget",
    "General",
    "GeometricSchedule",
    "LinearSchedule",
    "LogLinearSchedule",
    "Masked",
    "PolynomialSchedule",
    "Process",
    "Schedule",
    "Uniform",
    "analytic",
    "ancestral",
    "antithetic_times",
    "apply_temperature",
    "bits_per_token",
    "confidence",
    "ctmc_elbo",
    "denoiser_to_score",
    "elbo",
    "euler",
    "first_hitting",
    "flow_matching_ce",
    "loss_fn",
    "losses",
    "masked_elbo",
    "pc",
    "processes",
    "remdm",
    "reverse_rates",
    "sample",
    "sample_categorical",
    "sampler_options",
    "samplers",
    "schedules",
    "score_entropy",
    "score_to_denoiser",
    "tau_leaping",
    "time_free",
    "top_p_filter",
]
