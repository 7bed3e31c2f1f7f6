"""The two end terms of a continuous-time ELBO: prior KL at t = 1, reconstruction at t = 0.

Both vanish for schedules with alpha(1) = 0 and alpha(0) = 1 (linear, cosine, polynomial); they
matter for `GeometricSchedule` (and `LogLinearSchedule`, whose alpha(1) = eps).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from diffax.core import LinearHead, check_choice, check_shape
from diffax.core.validation import check_ndim
from diffax.discrete.parameterizations import ModelFn, as_denoiser, denoiser_nll
from diffax.discrete.processes import Process


def prior_kl(process: Process, x0: jax.Array) -> jax.Array:
    """sum_l KL(q(x_1^l | x_0^l) || prior) in nats. `x0`: `[B, L]` -> `[B]` float32.

    Delegates to `process.prior_kl` (closed forms for `Masked` and `Uniform`, the transition
    matrix for `General`; `prior_kl_from_marginal` for any process).
    """
    check_ndim(x0, "x0", "[B, L] (a batch of token sequences)", ndim=2)
    return process.prior_kl(x0)


def reconstruction(
    key: jax.Array, process: Process, model_fn: ModelFn, x0: jax.Array, prediction: str
) -> jax.Array:
    """E[-log p_theta(x_0 | x_{t=0})] in nats (zero, with no network call, if alpha(0) = 1).

    The decoder is the model's denoiser at t = 0; for an absorbing process (`mask_id` not None)
    unmasked tokens are decoded exactly (they hold x_0). `x0`: `[B, L]` -> `[B]` float32. A
    denoiser `model_fn` may return a `LinearHead` (cross-entropy in vocab chunks).
    """
    check_ndim(x0, "x0", "[B, L] (a batch of token sequences)", ndim=2)
    batch = x0.shape[0]
    if process.schedule.alpha_at(0.0) == 1.0:
        return jnp.zeros((batch,), jnp.float32)
    t = jnp.zeros((batch,), jnp.float32)
    x_t = process.sample_marginal(key, x0, t)
    output = model_fn(x_t, t)
    if isinstance(output, LinearHead):
        check_choice(prediction, ("denoiser",), "prediction (with a LinearHead model output)")
        nll = denoiser_nll(process, output, x0)[0]
    else:
        log_p = as_denoiser(process, _checked(output, process, x_t), x_t, t, prediction)
        nll = -jnp.take_along_axis(log_p, x0[..., None], axis=-1)[..., 0]
    if process.mask_id is not None:
        nll = jnp.where(x_t == process.mask_id, nll, 0.0)
    return jnp.sum(nll.reshape(batch, -1), axis=-1)


def _checked(output: jax.Array, process: Process, x_t: jax.Array) -> jax.Array:
    """The `[B, L, V]` model output as float32 (as `parameterizations.evaluate`)."""
    check_shape(output, tuple(x_t.shape) + (process.vocab_size,), "model_fn output")
    return jnp.asarray(output, jnp.float32)
