"""EDM's stochastic Heun sampler ("churn"), in the scaled variable x/alpha and noise sigma/alpha.

Any process `x_t = alpha x_0 + sigma eps` is, after dividing by alpha, the EDM form
`y = x_0 + s eps` with s = sigma/alpha = exp(-logSNR/2), whose PF-ODE is `dy/ds = eps_hat`.
Karras et al. 2022, Elucidating the Design Space of Diffusion-Based Generative Models, Algorithm 2.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from diffax.continuous.parameterizations import Denoiser, ModelFn, make_denoiser
from diffax.continuous.processes import GaussianProcess
from diffax.continuous.samplers.base import finish, register_sampler
from diffax.core.arrays import TINY


def noise_level(process: GaussianProcess, t) -> jax.Array:
    """EDM noise level s(t) = sigma(t)/alpha(t) = exp(-logSNR(t)/2)."""
    return jnp.exp(-0.5 * process.log_snr(t))


def t_of_noise_level(process: GaussianProcess, s) -> jax.Array:
    """Inverse of `noise_level`, clipped to [0, 1]."""
    return process.t_from_log_snr(-2.0 * jnp.log(jnp.maximum(s, TINY)))


def churn_scale(s_hi: jax.Array, s_lo: jax.Array) -> jax.Array:
    """sqrt(s_hi^2 - s_lo^2) for s_hi >= s_lo, exactly 0 when s_hi == s_lo.

    Written as a product: XLA contracts `s_hi**2 - s_lo**2` into a fused multiply-add whose
    rounding residual (~1 ulp of s^2) is not 0 at s_hi == s_lo; its square root, ~2.4e-4 s, used
    to add fresh noise at every step of the "deterministic" s_churn = 0 sampler.
    """
    return jnp.sqrt(jnp.maximum((s_hi - s_lo) * (s_hi + s_lo), 0.0))


def heun_step(
    process: GaussianProcess, denoiser: Denoiser, y: jax.Array, t, s_t, t_next, s_next
) -> tuple[jax.Array, jax.Array]:
    """One Heun step of dy/ds = eps_hat from noise level s_t (time t) to s_next (time t_next).

    `y = x/alpha` is `[B, ...]`. The corrector is skipped (Euler step, one NFE) when s_next = 0,
    where eps_hat is undefined. Returns `(y_next, nfe)`.
    """
    batch = y.shape[0]

    def eps_at(y, t):
        tb = jnp.full((batch,), t)
        return denoiser(process.alpha(t) * y, tb)[1]

    d = eps_at(y, t)
    y_euler = y + (s_next - s_t) * d

    def correct(_):
        return y + 0.5 * (s_next - s_t) * (d + eps_at(y_euler, t_next)), jnp.int32(2)

    return jax.lax.cond(s_next > 0, correct, lambda _: (y_euler, jnp.int32(1)), None)


@register_sampler(
    "edm_heun",
    t_min=1e-3,
    grid="karras",
    uses_sde_t_max=True,
    evals_per_step=2,
    reference="Karras et al. 2022, EDM, Algorithm 2 (stochastic Heun with churn)",
)
def edm_heun(
    key: jax.Array,
    process: GaussianProcess,
    model_fn: ModelFn,
    x: jax.Array,
    ts: jax.Array,
    *,
    prediction: str = "eps",
    denoise: bool = True,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
) -> tuple[jax.Array, dict]:
    """EDM Heun sampler with churn. NFE = 2N (+1 if `denoise`), minus 1 if the grid ends at
    noise level 0 (the last step is then Euler).

    At each step with noise level s_i in [s_tmin, s_tmax], noise is first added to raise the level
    to s_hat = s_i (1 + gamma), gamma = min(s_churn / N, sqrt(2) - 1), capped at the level of
    `process.sde_t_max`; then a Heun step goes to s_{i+1}. `s_churn = 0` (or no level in
    [s_tmin, s_tmax]) adds exactly zero noise: the deterministic EDM sampler, independent of
    `key`, equal to `ode_heun` on the same grid when s = sigma/alpha is affine in t (EDM, VE
    with alpha = 1 and linear sigma).

    Args:
      key: PRNG key (used when s_churn > 0).
      process, model_fn, x, ts, prediction: as in `euler_maruyama`.
      denoise: return the x0 prediction at `ts[-1]`; this is EDM's last Euler step from
        sigma_min to 0 (one NFE), which Karras et al. count in their 2N - 1.
      s_churn, s_tmin, s_tmax, s_noise: EDM's stochasticity parameters (noise levels s = sigma /
        alpha, as in the paper).
    """
    denoiser = make_denoiser(process, model_fn, prediction)
    num_steps = ts.shape[0] - 1
    levels = noise_level(process, ts)
    # Churn may raise the level up to the end of the domain where x/alpha is finite.
    s_top = noise_level(process, process.sde_t_max)
    # jnp, not Python min: s_churn may be traced (e.g. a sweep under jit).
    gamma_max = jnp.minimum(s_churn / num_steps, math.sqrt(2.0) - 1.0)

    def body(carry, i):
        y, nfe = carry
        t, s_i = ts[i], levels[i]
        gamma = jnp.where((s_i >= s_tmin) & (s_i <= s_tmax), gamma_max, 0.0)
        # The raised level must stay inside [t, sde_t_max], where x/alpha is finite.
        s_raised = jnp.minimum(s_i * (1.0 + gamma), jnp.maximum(s_top, s_i))
        # The inverse logSNR can round an ulp past sde_t_max: clip.
        t_raised = jnp.minimum(t_of_noise_level(process, s_raised), process.sde_t_max)
        t_hat = jnp.where(s_raised > s_i, jnp.maximum(t_raised, t), t)
        s_hat = jnp.where(s_raised > s_i, noise_level(process, t_hat), s_i)
        noise = jax.random.normal(jax.random.fold_in(key, i), y.shape, y.dtype)
        y = y + churn_scale(s_hat, s_i) * s_noise * noise
        y, evals = heun_step(process, denoiser, y, t_hat, s_hat, ts[i + 1], levels[i + 1])
        return (y, nfe + evals), None

    y = x / jnp.maximum(process.alpha(ts[0]), TINY)
    (y, nfe), _ = jax.lax.scan(body, (y, jnp.int32(0)), jnp.arange(num_steps))
    return finish(denoiser, process.alpha(ts[-1]) * y, ts[-1], nfe, denoise)
