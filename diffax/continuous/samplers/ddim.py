"""DDIM: the exact Gaussian step from t to s given the model's (x0, eps) prediction.

`x_s = alpha_s x0_hat + sqrt(sigma_s^2 - c^2) eps_hat + c z` with
`c^2 = eta^2 sigma_s^2 (1 - exp(logSNR_t - logSNR_s))`: eta = 0 is the deterministic DDIM (a
first-order solver of the PF-ODE in logSNR), eta = 1 is ancestral sampling from the DDPM posterior
q(x_s | x_t, x0_hat). Song et al. 2021, Denoising Diffusion Implicit Models.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from diffax.continuous.processes import GaussianProcess
from diffax.continuous.samplers.registry import register_sampler
from diffax.continuous.samplers.step import Step, no_state


def ddim_step(
    process: GaussianProcess,
    x0: jax.Array,
    eps: jax.Array,
    t: jax.Array,
    s: jax.Array,
    eta: float,
    noise: jax.Array,
) -> jax.Array:
    """One DDIM step from time t to s < t; `x0, eps, noise: [B, ...]`, `t, s` scalars."""
    sig_s = process.sigma(s)
    # 1 - exp(lam_t - lam_s) in expm1 form: accurate when the step is small.
    c2 = eta**2 * sig_s**2 * -jnp.expm1(process.log_snr(t) - process.log_snr(s))
    c2 = jnp.clip(c2, 0.0, sig_s**2)
    return process.alpha(s) * x0 + jnp.sqrt(sig_s**2 - c2) * eps + jnp.sqrt(c2) * noise


@register_sampler("ddim")
def ddim(eta: float = 0.0) -> Step:
    """DDIM (eta = 0 deterministic, eta = 1 ancestral). NFE = N (+1 if `denoise`).

    Args:
      eta: stochasticity, 0 (ODE) to 1 (DDPM ancestral); the step key is used when eta > 0.
    """

    def step(model, key, x, state, t, s):
        x0, eps = model.denoise(x, t)
        noise = jax.random.normal(key, x.shape, x.dtype)
        return ddim_step(model.process, x0, eps, t, s, eta, noise), state

    return Step(
        no_state,
        step,
        evals_per_step=1,
        name="ddim",
        grid="logsnr",
        reference="Song et al. 2021, Denoising Diffusion Implicit Models",
    )
