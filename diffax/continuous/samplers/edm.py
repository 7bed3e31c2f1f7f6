"""EDM's stochastic Heun sampler ("churn"), in the scaled variable x/alpha and noise sigma/alpha.

Any process `x_t = alpha x_0 + sigma eps` is, after dividing by alpha, the EDM form
`y = x_0 + s eps` with s = sigma/alpha = exp(-logSNR/2), whose PF-ODE is `dy/ds = eps_hat`.
Karras et al. 2022, Elucidating the Design Space of Diffusion-Based Generative Models, Algorithm 2.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from diffax.continuous.processes import GaussianProcess
from diffax.continuous.samplers.registry import register_sampler
from diffax.continuous.samplers.step import Model, Step, TMinPerStep, num_real_steps
from diffax.core.arrays import TINY
from diffax.core.validation import is_number


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


def heun_step(model: Model, y: jax.Array, t, s_t, t_next, s_next) -> tuple[jax.Array, jax.Array]:
    """One Heun step of dy/ds = eps_hat from noise level s_t (time t) to s_next (time t_next).

    `y = x/alpha` is `[B, ...]`. The corrector is skipped (Euler step, one NFE) when
    sigma(t_next) = 0, where eps_hat is undefined. Calls the network through `model.uncounted`
    (the corrector sits in `lax.cond`) and returns `(y_next, nfe)`: the caller counts it.
    """
    process, model = model.process, model.uncounted

    def eps_at(y, t):
        return model.denoise(process.alpha(t) * y, t)[1]

    d = eps_at(y, t)
    y_euler = y + (s_next - s_t) * d

    def correct(_):
        return y + 0.5 * (s_next - s_t) * (d + eps_at(y_euler, t_next)), jnp.int32(2)

    # The noise level of t = 0 is floored (logSNR is clipped), not 0: test sigma itself.
    last = (s_next <= 0) | (process.sigma(t_next) == 0)
    return jax.lax.cond(last, lambda _: (y_euler, jnp.int32(1)), correct, None)


def scaled_state(model: Model, x: jax.Array, ts: jax.Array) -> dict:
    """Step state of the samplers that work in y = x/alpha: the noise levels of the grid, the
    step index, the number of real steps, y and the x it was returned as (see
    `scaled_input`)."""
    y = x / jnp.maximum(model.process.alpha(ts[0]), TINY)
    levels = noise_level(model.process, ts)
    return {"levels": levels, "i": jnp.int32(0), "n": num_real_steps(ts), "y": y, "x": x}


def scaled_input(model: Model, x: jax.Array, state: dict, t) -> jax.Array:
    """y = x/alpha(t): the kept y where x is what the last step returned (no rounding through
    x), x/alpha where something else (a corrector, a user's step) changed x in between."""
    fresh = x / jnp.maximum(model.process.alpha(t), TINY)
    return jnp.where(x == state["x"], state["y"], fresh)


def scaled_output(model: Model, y: jax.Array, state: dict, s) -> tuple[jax.Array, dict]:
    """`(x_s = alpha(s) y, next state)`."""
    x = model.process.alpha(s) * y
    return x, {**state, "i": state["i"] + 1, "y": y, "x": x}


@register_sampler("edm_heun")
def edm_heun(
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
) -> Step:
    """EDM Heun sampler with churn. NFE = 2N - 1: the grid ends at t = 0 and the last step is
    Euler (Karras et al.'s 2N - 1); with `denoise=True` the grid ends at t_min instead, NFE 2N + 1.

    At each step with noise level s_i in [s_tmin, s_tmax], noise is first added to raise the level
    to s_hat = s_i (1 + gamma), gamma = min(s_churn / N, sqrt(2) - 1), capped at the level of
    `process.sde_t_max`; then a Heun step goes to s_{i+1}. `s_churn = 0` (or no level in
    [s_tmin, s_tmax]) adds exactly zero noise: the deterministic EDM sampler, independent of
    the key (as a Python 0 it draws no random numbers), equal to `ode_heun` on the same grid
    when s = sigma/alpha is affine in t (EDM, VE with alpha = 1 and linear sigma).

    Args:
      s_churn, s_tmin, s_tmax, s_noise: EDM's stochasticity parameters (noise levels s = sigma /
        alpha, as in the paper); the step key is used when s_churn > 0.
    """

    # s_churn = 0 known at construction: no churn noise is drawn at all.
    stochastic = not (is_number(s_churn) and s_churn == 0)

    def step(model, key, x, state, t, s):
        process, levels, i = model.process, state["levels"], state["i"]
        y = scaled_input(model, x, state, t)
        # Churn may raise the level up to the end of the domain where x/alpha is finite.
        s_top = noise_level(process, process.sde_t_max)
        # jnp, not Python min: s_churn may be traced (e.g. a sweep under jit).
        gamma_max = jnp.minimum(s_churn / state["n"], math.sqrt(2.0) - 1.0)
        s_i = levels[i]
        gamma = jnp.where((s_i >= s_tmin) & (s_i <= s_tmax), gamma_max, 0.0)
        # The raised level must stay inside [t, sde_t_max], where x/alpha is finite.
        s_raised = jnp.minimum(s_i * (1.0 + gamma), jnp.maximum(s_top, s_i))
        # The inverse logSNR can round an ulp past sde_t_max: clip.
        t_raised = jnp.minimum(t_of_noise_level(process, s_raised), process.sde_t_max)
        t_hat = jnp.where(s_raised > s_i, jnp.maximum(t_raised, t), t)
        s_hat = jnp.where(s_raised > s_i, noise_level(process, t_hat), s_i)
        if stochastic:
            noise = jax.random.normal(key, y.shape, y.dtype)
            y = y + churn_scale(s_hat, s_i) * s_noise * noise
        y_next, evals = heun_step(model, y, t_hat, s_hat, s, levels[i + 1])
        moving = s < t
        model.count(jnp.where(moving, evals, 0))
        return scaled_output(model, jnp.where(moving, y_next, y), state, s)

    return Step(
        scaled_state,
        step,
        evals_per_step=2,
        name="edm_heun",
        grid="uniform",
        t_min=TMinPerStep(1.0),
        uses_sde_t_max=True,
        reference="Karras et al. 2022, EDM, Algorithm 2 (stochastic Heun with churn)",
        to_zero=True,
    )
