"""Fixed-step probability-flow ODE solvers in t: Euler and Heun.

The PF-ODE `dx/dt = u(x, t) = alpha'(t) x0_hat + sigma'(t) eps_hat` shares its marginals with the
forward process. Song et al. 2021, Score-Based Generative Modeling through SDEs (section 4.3).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from diffax.continuous.parameterizations import ModelFn, make_denoiser, pf_ode_velocity
from diffax.continuous.processes import GaussianProcess
from diffax.continuous.samplers.base import finish, register_sampler


def _solve(key, process, model_fn, x, ts, prediction, denoise, heun):
    del key  # deterministic
    denoiser = make_denoiser(process, model_fn, prediction)
    batch = x.shape[0]

    def velocity(x, t):
        tb = jnp.full((batch,), t)
        return pf_ode_velocity(process, *denoiser(x, tb), tb)

    def body(carry, i):
        x, nfe = carry
        t, s = ts[i], ts[i + 1]
        d = velocity(x, t)
        x_euler = x + (s - t) * d
        if not heun:
            return (x_euler, nfe + 1), None
        x = x + 0.5 * (s - t) * (d + velocity(x_euler, s))
        return (x, nfe + 2), None

    (x, nfe), _ = jax.lax.scan(body, (x, jnp.int32(0)), jnp.arange(ts.shape[0] - 1))
    return finish(denoiser, x, ts[-1], nfe, denoise)


@register_sampler(
    "ode_euler",
    t_min=1e-3,
    grid="karras",
    uses_sde_t_max=False,
    evals_per_step=1,
    reference="Song et al. 2021, SDEs (probability-flow ODE), explicit Euler",
)
def ode_euler(
    key: jax.Array,
    process: GaussianProcess,
    model_fn: ModelFn,
    x: jax.Array,
    ts: jax.Array,
    *,
    prediction: str = "eps",
    denoise: bool = True,
) -> tuple[jax.Array, dict]:
    """Explicit Euler on the PF-ODE in t. NFE = N (+1 if `denoise`).

    Args:
      key: unused (deterministic); kept for the common signature.
      process, model_fn, x, ts, prediction, denoise: as in `euler_maruyama`.
    """
    return _solve(key, process, model_fn, x, ts, prediction, denoise, heun=False)


@register_sampler(
    "ode_heun",
    t_min=1e-3,
    grid="karras",
    uses_sde_t_max=False,
    evals_per_step=2,
    reference="Karras et al. 2022, EDM (Heun's 2nd-order method on the PF-ODE)",
)
def ode_heun(
    key: jax.Array,
    process: GaussianProcess,
    model_fn: ModelFn,
    x: jax.Array,
    ts: jax.Array,
    *,
    prediction: str = "eps",
    denoise: bool = True,
) -> tuple[jax.Array, dict]:
    """Heun (explicit trapezoidal) on the PF-ODE in t. NFE = 2N (+1 if `denoise`).

    Args as in `ode_euler`.
    """
    return _solve(key, process, model_fn, x, ts, prediction, denoise, heun=True)
