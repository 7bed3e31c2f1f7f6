"""Samplers for discrete diffusion: `Step` objects run by one loop (`run_steps`), a registry of
factories (`SAMPLERS`) and one entry point (`sample`).

| factory | method | processes | reference |
|---|---|---|---|
| `ancestral()` | posterior q(x_s given x_t, x_0), denoiser | all | Austin 2021; Sahoo 2024 |
| `tau_leaping()` | Poisson jumps from frozen reverse rates | all | Campbell 2022 |
| `euler()` | first-order CTMC step | all | Campbell 2022; Lou 2024 |
| `analytic()` | Tweedie step from the concrete score | all | Lou 2024 |
| `first_hitting()` | exact next-reveal times, one token per call | absorbing | Zheng 2024 |
| `pc(predictor, ...)` | predictor + corrector (reverse + forward rates) | all | Campbell 2022 |
| `remdm(eta, strategy)` | remasking posterior | absorbing | Wang 2025 |
| `confidence(confidence, block_length)` | most-confident-first, blocks | absorbing | Nie 2025 |

"absorbing": a process with a mask state (`process.mask_id is not None`, e.g. `Masked`).
"""

from diffax.discrete.samplers.analytic import analytic
from diffax.discrete.samplers.ancestral import ancestral
from diffax.discrete.samplers.confidence import confidence
from diffax.discrete.samplers.euler import euler, euler_logits
from diffax.discrete.samplers.first_hitting import first_hitting
from diffax.discrete.samplers.grids import GRIDS, time_grid
from diffax.discrete.samplers.loop import denoise, run_steps
from diffax.discrete.samplers.pc import pc
from diffax.discrete.samplers.registry import SAMPLERS, register_sampler, samplers
from diffax.discrete.samplers.remdm import remdm
from diffax.discrete.samplers.sample import sample, sampler_options
from diffax.discrete.samplers.step import Model, Step
from diffax.discrete.samplers.tau_leaping import tau_leaping, tau_leaping_logits

__all__ = [
    "GRIDS",
    "SAMPLERS",
    "Model",
    "Step",
    "analytic",
    "ancestral",
    "confidence",
    "denoise",
    "euler",
    "euler_logits",
    "first_hitting",
    "pc",
    "register_sampler",
    "remdm",
    "run_steps",
    "sample",
    "sampler_options",
    "samplers",
    "tau_leaping",
    "tau_leaping_logits",
    "time_grid",
]
