"""Samplers for Gaussian diffusion processes, resolved by name through `SAMPLERS`.

Importing this package registers every built-in sampler.
"""

from diffax.continuous.samplers.adaptive import adaptive_ode, adaptive_sde
from diffax.continuous.samplers.base import SAMPLERS, SamplerSpec, register_sampler
from diffax.continuous.samplers.ddim import ddim, ddim_step
from diffax.continuous.samplers.dpm_solver import (
    dpm_solver_pp_2m,
    dpm_solver_pp_2s,
    dpm_solver_pp_3m,
)
from diffax.continuous.samplers.edm import edm_heun
from diffax.continuous.samplers.ode import ode_euler, ode_heun
from diffax.continuous.samplers.restart import restart
from diffax.continuous.samplers.sde import euler_maruyama, langevin_step, predictor_corrector

__all__ = [
    "SAMPLERS",
    "SamplerSpec",
    "adaptive_ode",
    "adaptive_sde",
    "ddim",
    "ddim_step",
    "dpm_solver_pp_2m",
    "dpm_solver_pp_2s",
    "dpm_solver_pp_3m",
    "edm_heun",
    "euler_maruyama",
    "langevin_step",
    "ode_euler",
    "ode_heun",
    "predictor_corrector",
    "register_sampler",
    "restart",
]
