"""Reverse-SDE samplers: Euler-Maruyama and predictor-corrector.

The reverse-time SDE family with the same marginals as the forward process is
`dx = [u(x, t) - (eta^2 / 2) g(t)^2 score(x, t)] dt + eta g(t) dW_bar`, where `u` is the
probability-flow ODE velocity: eta = 0 is the PF-ODE, eta = 1 the reverse SDE of Anderson (1982).
Song et al. 2021, Score-Based Generative Modeling through SDEs; Karras et al. 2022, EDM (eq. 6).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from diffax.continuous.parameterizations import ModelFn, make_denoiser, pf_ode_velocity
from diffax.continuous.processes import GaussianProcess
from diffax.continuous.samplers.base import finish, register_sampler
from diffax.continuous.samplers.ddim import ddim_step
from diffax.core.arrays import TINY, expand_as, safe_div, sum_event


def reverse_sde_drift(
    process: GaussianProcess, x0: jax.Array, eps: jax.Array, t: jax.Array, eta: float
) -> jax.Array:
    """Reverse drift `u - (eta^2/2) g^2 score = u + (eta^2/2) (g^2/sigma) eps_hat`, `[B, ...]`."""
    rate = 0.5 * eta**2 * process.g2(t) / jnp.maximum(process.sigma(t), TINY)
    return pf_ode_velocity(process, x0, eps, t) + expand_as(rate, eps) * eps


@register_sampler(
    "euler_maruyama",
    t_min=1e-3,
    grid="uniform",
    uses_sde_t_max=True,
    evals_per_step=1,
    reference="Song et al. 2021, Score-Based Generative Modeling through SDEs",
)
def euler_maruyama(
    key: jax.Array,
    process: GaussianProcess,
    model_fn: ModelFn,
    x: jax.Array,
    ts: jax.Array,
    *,
    prediction: str = "eps",
    denoise: bool = True,
    eta: float = 1.0,
) -> tuple[jax.Array, dict]:
    """Euler-Maruyama on the reverse SDE with stochasticity `eta` in [0, 1]. NFE = N (+1).

    Args:
      key: PRNG key.
      process: the Gaussian process.
      model_fn: `(x: [B, ...], t: [B]) -> [B, ...]` in the `prediction` parameterization.
      x: `[B, ...]` prior sample at `ts[0]`.
      ts: `[N + 1]` decreasing times.
      prediction: what `model_fn` predicts.
      denoise: return the x0 prediction at `ts[-1]`.
      eta: 0 = probability-flow ODE (Euler), 1 = reverse SDE.
    """
    denoiser = make_denoiser(process, model_fn, prediction)
    batch = x.shape[0]

    def body(carry, i):
        x, nfe = carry
        t, s = ts[i], ts[i + 1]
        tb = jnp.full((batch,), t)
        x0, eps = denoiser(x, tb)
        dt = s - t
        noise = jax.random.normal(jax.random.fold_in(key, i), x.shape, x.dtype)
        diffusion = eta * jnp.sqrt(process.g2(t) * -dt)
        x = x + reverse_sde_drift(process, x0, eps, tb, eta) * dt + diffusion * noise
        return (x, nfe + 1), None

    (x, nfe), _ = jax.lax.scan(body, (x, jnp.int32(0)), jnp.arange(ts.shape[0] - 1))
    return finish(denoiser, x, ts[-1], nfe, denoise)


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


@register_sampler(
    "pc",
    t_min=1e-3,
    grid="uniform",
    uses_sde_t_max=True,
    evals_per_step=2,
    reference="Song et al. 2021, Score-Based Generative Modeling through SDEs (Algorithms 4-5)",
)
def predictor_corrector(
    key: jax.Array,
    process: GaussianProcess,
    model_fn: ModelFn,
    x: jax.Array,
    ts: jax.Array,
    *,
    prediction: str = "eps",
    denoise: bool = True,
    snr: float = 0.16,
    corrector_steps: int = 1,
) -> tuple[jax.Array, dict]:
    """Predictor-corrector: Langevin corrector steps at t, then an ancestral predictor step.

    The predictor is the exact DDPM posterior step q(x_s | x_t, x0_hat) (DDIM with eta = 1), the
    corrector `corrector_steps` Langevin steps with target `snr`. NFE = (1 + corrector_steps) N
    (+1 if `denoise`). Args as in `euler_maruyama`.
    """
    denoiser = make_denoiser(process, model_fn, prediction)
    batch = x.shape[0]

    def body(carry, i):
        x, nfe = carry
        t, s = ts[i], ts[i + 1]
        tb = jnp.full((batch,), t)
        step_key = jax.random.fold_in(key, i)
        sigma = jnp.maximum(process.sigma(t), TINY)
        for j in range(corrector_steps):
            _, eps = denoiser(x, tb)
            noise = jax.random.normal(jax.random.fold_in(step_key, j + 1), x.shape, x.dtype)
            x = langevin_step(x, eps, sigma, snr, noise)
        x0, eps = denoiser(x, tb)
        noise = jax.random.normal(jax.random.fold_in(step_key, 0), x.shape, x.dtype)
        x = ddim_step(process, x0, eps, t, s, 1.0, noise)
        return (x, nfe + corrector_steps + 1), None

    (x, nfe), _ = jax.lax.scan(body, (x, jnp.int32(0)), jnp.arange(ts.shape[0] - 1))
    return finish(denoiser, x, ts[-1], nfe, denoise)
