"""Reverse-SDE sampling: Euler-Maruyama and the Langevin corrector step.

The reverse-time SDE family with the same marginals as the forward process is
`dx = [u(x, t) - (eta^2 / 2) g(t)^2 score(x, t)] dt + eta g(t) dW_bar`, where `u` is the
probability-flow ODE velocity: eta = 0 is the PF-ODE, eta = 1 the reverse SDE of Anderson (1982).
Song et al. 2021, Score-Based Generative Modeling through SDEs; Karras et al. 2022, EDM (eq. 6).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from diffax.continuous.parameterizations import pf_ode_velocity
from diffax.continuous.processes import GaussianProcess
from diffax.continuous.samplers.registry import register_sampler
from diffax.continuous.samplers.step import Step, no_state
from diffax.core.arrays import TINY, expand_as, safe_div, sum_event


def reverse_sde_drift(
    process: GaussianProcess, x0: jax.Array, eps: jax.Array, t: jax.Array, eta: float
) -> jax.Array:
    """Reverse drift `u - (eta^2/2) g^2 score = u + (eta^2/2) (g^2/sigma) eps_hat`, `[B, ...]`."""
    rate = 0.5 * eta**2 * process.g2(t) / jnp.maximum(process.sigma(t), TINY)
    return pf_ode_velocity(process, x0, eps, t) + expand_as(rate, eps) * eps


@register_sampler("euler_maruyama")
def euler_maruyama(eta: float = 1.0) -> Step:
    """Euler-Maruyama on the reverse SDE with stochasticity `eta` in [0, 1]. NFE = N (+1).

    Args:
      eta: 0 = probability-flow ODE (Euler), 1 = reverse SDE.
    """

    def step(model, key, x, state, t, s):
        process = model.process
        tb = jnp.full((x.shape[0],), t)
        x0, eps = model.denoise(x, tb)
        dt = s - t
        noise = jax.random.normal(key, x.shape, x.dtype)
        diffusion = eta * jnp.sqrt(process.g2(t) * -dt)
        x = x + reverse_sde_drift(process, x0, eps, tb, eta) * dt + diffusion * noise
        return x, state

    return Step(
        no_state,
        step,
        evals_per_step=1,
        name="euler_maruyama",
        uses_sde_t_max=True,
        reference="Song et al. 2021, Score-Based Generative Modeling through SDEs",
    )


def langevin_step(
    x: jax.Array, eps: jax.Array, sigma: jax.Array, snr: float, noise: jax.Array
) -> jax.Array:
    """One Langevin corrector step with the step size set by a target signal-to-noise ratio.

    `score = -eps/sigma`, step `2 (snr |noise| / |score|)^2` with both norms averaged over the
    batch (as score_sde does): per-example norms make the step explode in low dimension, where
    the score can vanish near a mode. Song et al. 2021, SDEs, Algorithm 5.
    """
    score_norm = jnp.mean(jnp.sqrt(sum_event(jnp.square(eps)))) / sigma
    noise_norm = jnp.mean(jnp.sqrt(sum_event(jnp.square(noise))))
    step = 2.0 * jnp.square(safe_div(snr * noise_norm, score_norm))
    return x - step * eps / sigma + jnp.sqrt(2.0 * step) * noise
