"""Gaussian diffusion processes `x_t = alpha(t) x_0 + sigma(t) eps` on t in [0, 1].

t = 0 is data, t = 1 is the prior. A process only supplies `alpha(t)` and `sigma(t)` (and, where
they are cheaper or more accurate, closed forms of their derivatives); everything else follows:

* drift `f(t) = d log alpha / dt` and diffusion `g(t)^2 = d sigma^2/dt - 2 f sigma^2 = -sigma^2
  dlogSNR/dt`, so that the forward SDE `dx = f x dt + g dW` has the marginals above
  (Song et al. 2021, Score-Based Generative Modeling through SDEs; Kingma et al. 2021, VDM);
* `logSNR(t) = 2 log(alpha / sigma)`, clipped to `[-LOG_SNR_BOUND, LOG_SNR_BOUND]` so that
  `exp(+-logSNR / 2)` stays finite in float32 where alpha or sigma is exactly 0;
* marginal sampling, prior sampling and the prior log-density `N(0, sigma(1)^2 I)`.

Edge behaviour (float32): alpha and sigma are exact (0 allowed). Rates that are infinite at an end
(`f`, `g` at t = 1 for `RectifiedFlow` and `Cosine`, `d sigma/dt` at t = 0 for VP / sub-VP) are
computed with alpha and sigma floored at `TINY` (the smallest normal float32), so they are large
but finite. The reverse SDE of a process with alpha(1) = 0 is singular at t = 1, so SDE samplers
start at `process.sde_t_max` (< 1 for those processes, 1 otherwise).

Layout: `base.py` (GaussianProcess), `schedules.py` (VP schedules as objects: LinearBeta,
CosineSchedule, the VPSchedule base for user schedules, SCHEDULES), `vp.py` (VP, SubVP), `ve.py`
(VE, EDM), `flows.py` (RectifiedFlow, Cosine).
"""

from diffax.continuous.processes.base import LOG_SNR_BOUND, PROCESSES, GaussianProcess
from diffax.continuous.processes.flows import Cosine, RectifiedFlow
from diffax.continuous.processes.schedules import (
    SCHEDULES,
    CosineSchedule,
    LinearBeta,
    VPSchedule,
    check_vp_schedule,
)
from diffax.continuous.processes.ve import EDM, VE
from diffax.continuous.processes.vp import VP, SubVP

__all__ = [
    "EDM",
    "LOG_SNR_BOUND",
    "PROCESSES",
    "SCHEDULES",
    "VE",
    "VP",
    "Cosine",
    "CosineSchedule",
    "GaussianProcess",
    "LinearBeta",
    "RectifiedFlow",
    "SubVP",
    "VPSchedule",
    "check_vp_schedule",
]
