"""Continuous-data diffusion in pure JAX: processes, parameterizations, losses, samplers.

Conventions: t in [0, 1], t = 0 data, t = 1 prior; `x_t = alpha(t) x_0 + sigma(t) eps`; arrays
have a leading batch axis; `model_fn(x: [B, ...], t: [B]) -> [B, ...]`. See docs/continuous.md.
"""

from diffax.continuous.adaptive_rk import SolveStats, solve_adaptive
from diffax.continuous.elbo import ELBOTerms, dequantize_8bit, elbo_bpd, elbo_terms
from diffax.continuous.gaussian_mixture import GaussianMixture
from diffax.continuous.guidance import classifier_free_guidance
from diffax.continuous.likelihood import (
    bits_per_dim,
    hutchinson_trace,
    jacobian_trace,
    log_likelihood,
    log_likelihood_and_info,
)
from diffax.continuous.losses import (
    TIME_SAMPLERS,
    WEIGHTINGS,
    TimeSampler,
    Weighting,
    dsm_loss,
    loss_weight,
    sample_times,
    time_samplers,
    weightings,
)
from diffax.continuous.metrics import sliced_wasserstein
from diffax.continuous.parameterizations import (
    PREDICTIONS,
    EDMScalings,
    convert,
    edm_denoiser,
    edm_preconditioning,
    from_x0_eps,
    make_denoiser,
    pf_ode_velocity,
    to_x0_eps,
)
from diffax.continuous.processes import (
    EDM,
    PROCESSES,
    SCHEDULES,
    VE,
    VP,
    Cosine,
    CosineSchedule,
    GaussianProcess,
    LinearBeta,
    RectifiedFlow,
    SubVP,
    VPSchedule,
)
from diffax.continuous.samplers import (
    SAMPLERS,
    Model,
    Step,
    register_sampler,
    run_steps,
    sample,
    sampler_options,
)
from diffax.continuous.time_grids import GRIDS, time_grid

__all__ = [
    "EDM",
    "GRIDS",
    "PREDICTIONS",
    "PROCESSES",
    "SAMPLERS",
    "SCHEDULES",
    "TIME_SAMPLERS",
    "VE",
    "VP",
    "WEIGHTINGS",
    "Cosine",
    "CosineSchedule",
    "EDMScalings",
    "ELBOTerms",
    "GaussianMixture",
    "GaussianProcess",
    "LinearBeta",
    "Model",
    "RectifiedFlow",
    "SolveStats",
    "Step",
    "SubVP",
    "TimeSampler",
    "VPSchedule",
    "Weighting",
    "bits_per_dim",
    "classifier_free_guidance",
    "convert",
    "dequantize_8bit",
    "dsm_loss",
    "edm_denoiser",
    "edm_preconditioning",
    "elbo_bpd",
    "elbo_terms",
    "from_x0_eps",
    "hutchinson_trace",
    "jacobian_trace",
    "log_likelihood",
    "log_likelihood_and_info",
    "loss_weight",
    "make_denoiser",
    "pf_ode_velocity",
    "register_sampler",
    "run_steps",
    "sample",
    "sampler_options",
    "sample_times",
    "sliced_wasserstein",
    "solve_adaptive",
    "time_grid",
    "time_samplers",
    "to_x0_eps",
    "weightings",
]
