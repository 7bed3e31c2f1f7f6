"""The two end terms of a continuous-time ELBO: prior KL at t = 1, reconstruction at t = 0.

Both vanish for schedules with alpha(1) = 0 and alpha(0) = 1 (linear, cosine, polynomial); they
matter for `GeometricSchedule` (and `LogLinearSchedule`, whose alpha(1) = eps).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from diffax.core.arrays import safe_log
from diffax.core.validation import check_ndim
from diffax.discrete.parameterizations import ModelFn, as_denoiser, evaluate
from diffax.discrete.processes import Masked, Process, Uniform


def prior_kl(process: Process, x0: jax.Array) -> jax.Array:
    """sum_l KL(q(x_1^l | x_0^l) || prior) in nats. `x0`: `[B, L]` -> `[B]` float32.

    Closed form for `Masked` (alpha(1) log V per token) and `Uniform`; from the transition
    matrix otherwise.
    """
    check_ndim(x0, "x0", "[B, L] (a batch of token sequences)", ndim=2)
    batch, length = x0.shape[0], math.prod(x0.shape[1:])
    a1 = process.schedule.alpha_at(1.0)
    if isinstance(process, Masked):
        return jnp.full((batch,), length * a1 * math.log(process.vocab_size), jnp.float32)
    if isinstance(process, Uniform):
        v = process.vocab_size
        stay = a1 + (1.0 - a1) / v
        per_token = stay * math.log1p((v - 1) * a1)
        if a1 < 1.0:
            per_token += (v - 1) * (1.0 - a1) / v * math.log1p(-a1)
        return jnp.full((batch,), length * per_token, jnp.float32)
    t = jnp.ones((batch,), jnp.float32)
    q = process.marginal_probs(x0, t)
    log_prior = safe_log(process.prior_probs())
    kl = jnp.where(q > 0, q * (safe_log(q) - log_prior), 0.0)
    return jnp.sum(kl.reshape(batch, -1), axis=-1)


def reconstruction(
    key: jax.Array, process: Process, model_fn: ModelFn, x0: jax.Array, prediction: str
) -> jax.Array:
    """E[-log p_theta(x_0 | x_{t=0})] in nats (zero, with no network call, if alpha(0) = 1).

    The decoder is the model's denoiser at t = 0; for `Masked`, unmasked tokens are decoded
    exactly (they hold x_0). `x0`: `[B, L]` -> `[B]` float32.
    """
    check_ndim(x0, "x0", "[B, L] (a batch of token sequences)", ndim=2)
    batch = x0.shape[0]
    if process.schedule.alpha_at(0.0) == 1.0:
        return jnp.zeros((batch,), jnp.float32)
    t = jnp.zeros((batch,), jnp.float32)
    x_t = process.sample_marginal(key, x0, t)
    log_p = as_denoiser(process, evaluate(model_fn, process, x_t, t), x_t, t, prediction)
    nll = -jnp.take_along_axis(log_p, x0[..., None], axis=-1)[..., 0]
    if isinstance(process, Masked):
        nll = jnp.where(x_t == process.mask_id, nll, 0.0)
    return jnp.sum(nll.reshape(batch, -1), axis=-1)
