"""DDIM: the exact Gaussian step from t to s given the model's (x0, eps) prediction.

`x_s = alpha_s x0_hat + sqrt(sigma_s^2 - c^2) eps_hat + c z` with
`c^2 = eta^2 sigma_s^2 (1 - exp(logSNR_t - logSNR_s))`: eta = 0 is the deterministic DDIM (a
first-order solver of the PF-ODE in logSNR), eta = 1 is ancestral sampling from the DDPM posterior
q(x_s | x_t, x0_hat). Song et al. 2021, Denoising Diffusion Implicit Models.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from diffax.continuous.parameterizations import ModelFn, make_denoiser
from diffax.continuous.processes import GaussianProcess
from diffax.continuous.samplers.base import finish, register_sampler


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


@register_sampler(
    "ddim",
    t_min=1e-3,
    grid="logsnr",
    uses_sde_t_max=False,
    evals_per_step=1,
    reference="Song et al. 2021, Denoising Diffusion Implicit Models",
)
def ddim(
    key: jax.Array,
    process: GaussianProcess,
    model_fn: ModelFn,
    x: jax.Array,
    ts: jax.Array,
    *,
    prediction: str = "eps",
    denoise: bool = True,
    eta: float = 0.0,
) -> tuple[jax.Array, dict]:
    """DDIM sampler (eta = 0 deterministic, eta = 1 ancestral). NFE = N (+1 if `denoise`).

    Args:
      key: PRNG key (used when eta > 0).
      process: the Gaussian process.
      model_fn: `(x: [B, ...], t: [B]) -> [B, ...]` in the `prediction` parameterization.
      x: `[B, ...]` prior sample at `ts[0]`.
      ts: `[N + 1]` decreasing times.
      prediction: what `model_fn` predicts.
      denoise: return the x0 prediction at `ts[-1]`.
      eta: stochasticity, 0 (ODE) to 1 (DDPM ancestral).
    """
    denoiser = make_denoiser(process, model_fn, prediction)
    batch = x.shape[0]

    def body(carry, i):
        x, nfe = carry
        t, s = ts[i], ts[i + 1]
        x0, eps = denoiser(x, jnp.full((batch,), t))
        noise = jax.random.normal(jax.random.fold_in(key, i), x.shape, x.dtype)
        return (ddim_step(process, x0, eps, t, s, eta, noise), nfe + 1), None

    (x, nfe), _ = jax.lax.scan(body, (x, jnp.int32(0)), jnp.arange(ts.shape[0] - 1))
    return finish(denoiser, x, ts[-1], nfe, denoise)
