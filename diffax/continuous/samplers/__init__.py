"""Samplers for Gaussian diffusion processes: `Step` objects run by `run_steps`.

Every built-in sampler is a factory that binds its hyper-parameters and returns a `Step`
(`ddim(eta=1.0)`, `edm_heun(s_churn=5.0)`, `pc(predictor=ddim(eta=1.0))`, ...); `SAMPLERS` maps
its name to the factory (importing this package registers them all). See docs/continuous.md.
"""

from diffax.continuous.samplers.adaptive import adaptive_ode, adaptive_sde
from diffax.continuous.samplers.ddim import ddim, ddim_step
from diffax.continuous.samplers.deis import deis
from diffax.continuous.samplers.dpm_solver import (
    dpm_solver_pp_2m,
    dpm_solver_pp_2s,
    dpm_solver_pp_3m,
)
from diffax.continuous.samplers.edm import edm_heun
from diffax.continuous.samplers.loop import run_steps
from diffax.continuous.samplers.ode import ode_euler, ode_heun
from diffax.continuous.samplers.pc import pc, predictor_corrector
from diffax.continuous.samplers.registry import SAMPLERS, register_sampler
from diffax.continuous.samplers.restart import restart
from diffax.continuous.samplers.sample import sample, sampler_options
from diffax.continuous.samplers.sde import euler_maruyama, langevin_step
from diffax.continuous.samplers.step import (
    Model,
    Step,
    TMinPerStep,
    is_final_to_zero,
    no_state,
    num_real_steps,
)
from diffax.continuous.samplers.unipc import unipc

__all__ = [
    "SAMPLERS",
    "Model",
    "Step",
    "TMinPerStep",
    "adaptive_ode",
    "adaptive_sde",
    "ddim",
    "ddim_step",
    "deis",
    "dpm_solver_pp_2m",
    "dpm_solver_pp_2s",
    "dpm_solver_pp_3m",
    "edm_heun",
    "euler_maruyama",
    "is_final_to_zero",
    "langevin_step",
    "no_state",
    "num_real_steps",
    "ode_euler",
    "ode_heun",
    "pc",
    "predictor_corrector",
    "register_sampler",
    "restart",
    "run_steps",
    "sample",
    "sampler_options",
    "unipc",
]
