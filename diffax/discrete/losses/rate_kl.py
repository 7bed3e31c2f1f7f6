"""The continuous-time ELBO of any per-token CTMC, as a KL between reverse jump rates.

For x_t ~ q_t(. | x_0), the true reverse process conditioned on x_0 jumps x_t -> y at rate
R_c(y) = Q(t)[y, x_t] q_t(y | x_0) / q_t(x_t | x_0); the model jumps at R_theta(y) from its
denoiser or concrete score. The negative ELBO is

  int_0^1 E_{x_t} sum_l sum_{y != x_t^l} [R_theta - R_c + R_c log(R_c / R_theta)] dt
  + reconstruction (alpha(0) < 1) + KL(q_1 || prior),

Campbell et al. 2022's CTMC ELBO with the jump expectation summed exactly over the single-token
moves, which is also Lou et al. 2024's denoising score entropy (SEDD) with the constant
K(a) = a (log a - 1) kept, so the value is a bound in nats. Rates are handled as
scale(t) * exp(log_rel): the scale factors out of the log-ratio, so the integrand stays finite
where beta(t) is not (t = 1 for the linear schedule).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from diffax.core import batch_time, check_tokens
from diffax.discrete.losses.endpoints import prior_kl, reconstruction
from diffax.discrete.losses.times import antithetic_times
from diffax.discrete.parameterizations import ModelFn, check_prediction, evaluate, reverse_rates
from diffax.discrete.processes import Masked, Process
from diffax.discrete.processes.base import log_one_hot


def check_score_supported(process: Process, prediction: str) -> None:
    """The masked concrete score is identically zero where alpha(t) = 0; refuse that case."""
    if (
        prediction == "concrete_score"
        and isinstance(process, Masked)
        and process.schedule.alpha_at(1.0) == 0.0
    ):
        raise ValueError(
            "prediction='concrete_score' with a Masked process needs alpha(1) > 0 (the masked "
            "concrete score vanishes where alpha(t) = 0); use e.g. LogLinearSchedule(eps) or "
            "prediction='denoiser'"
        )


def rate_kl_terms(
    process: Process,
    output: jax.Array,
    x0: jax.Array,
    xt: jax.Array,
    t: jax.Array,
    prediction: str,
) -> jax.Array:
    """Per-token integrand sum_y [R_theta - R_c + R_c log(R_c / R_theta)] at time t, in nats.

    Args:
      process: the forward process. output: `[B, L, V]` network output at (xt, t).
      x0: `[B, L]` clean tokens. xt: `[B, L]` noisy tokens. t: `[B]` times.
      prediction: "denoiser" or "concrete_score".

    Returns:
      `[B, L]` float32 (>= 0).

    Reference: Campbell et al. 2022, eq. 6; Lou et al. 2024 (SEDD), eq. 8.
    """
    scale, log_model = reverse_rates(process, output, xt, t, prediction)
    _, log_true = process.reverse_rates(xt, t, log_p0=log_one_hot(x0, process.vocab_size))
    true = jnp.exp(log_true)
    log_gap = jnp.where(true > 0, log_true - jnp.where(true > 0, log_model, 0.0), 0.0)
    div = jnp.sum(jnp.exp(log_model) - true + true * log_gap, axis=-1)
    # Where the two rate vectors agree exactly the integrand is 0 even if scale(t) is infinite.
    return jnp.where(div == 0, 0.0, scale.reshape((-1,) + (1,) * (div.ndim - 1)) * div)


def _bound(key, process, model_fn, x0, t, prediction, weight):
    check_prediction(prediction)
    check_score_supported(process, prediction)
    check_tokens(x0, process.vocab_size, "x0")
    key_t, key_x, key_0 = jax.random.split(key, 3)
    t = antithetic_times(key_t, x0.shape[0]) if t is None else batch_time(t, x0.shape[0])
    xt = process.sample_marginal(key_x, x0, t)
    output = evaluate(model_fn, process, xt, t)
    terms = rate_kl_terms(process, output, x0, xt, t, prediction)
    total = jnp.sum(terms.reshape(x0.shape[0], -1), axis=-1)
    if weight is not None:
        total = total * weight
    return total + reconstruction(key_0, process, model_fn, x0, prediction) + prior_kl(process, x0)


def ctmc_elbo(
    key: jax.Array,
    process: Process,
    model_fn: ModelFn,
    x0: jax.Array,
    t: jax.Array | None = None,
    *,
    prediction: str = "denoiser",
    weight: jax.Array | None = None,
) -> jax.Array:
    """Single-sample Monte-Carlo negative ELBO of any CTMC diffusion, in nats per sequence.

    The model's reverse rates come from its denoiser (default) or concrete score. For `Masked`
    with a denoiser this equals `masked_elbo` term by term.

    Args:
      key: PRNG key.
      process: `Masked`, `Uniform` or `General`.
      model_fn: `(tokens [B, L] int32, t [B]) -> [B, L, V]`.
      x0: `[B, L]` int32 clean tokens.
      t: optional `[B]` times in (0, 1]; default antithetic times over the batch.
      prediction: "denoiser" or "concrete_score".
      weight: optional `[B]` factor on the time integrand (1 / q(t) when t is drawn from q).

    Returns:
      `[B]` float32 negative ELBO in nats.

    Reference: Campbell et al. 2022, A Continuous Time Framework for Discrete Denoising Models.
    """
    return _bound(key, process, model_fn, x0, t, prediction, weight)


def score_entropy(
    key: jax.Array,
    process: Process,
    model_fn: ModelFn,
    x0: jax.Array,
    t: jax.Array | None = None,
    *,
    prediction: str = "concrete_score",
    weight: jax.Array | None = None,
) -> jax.Array:
    """Denoising score entropy (with its constant), a negative ELBO in nats per sequence.

    sum_{y != x_t} Q(t)[y, x_t] (s_y - r_y log s_y + K(r_y)), s = exp(model log ratios),
    r_y = q_t(y | x_0) / q_t(x_t | x_0), K(a) = a (log a - 1). Same value as `ctmc_elbo`;
    the default parameterization is the concrete score.

    Args:
      key: PRNG key. process: any process (`Masked` needs alpha(1) > 0 for concrete scores).
      model_fn: `(tokens, t) -> [B, L, V]` log concrete scores (or denoiser logits).
      x0: `[B, L]` int32. t: optional `[B]` times. prediction: "concrete_score" or "denoiser".
      weight: optional `[B]` factor on the time integrand (1 / q(t) when t is drawn from q).

    Returns:
      `[B]` float32 negative ELBO in nats.

    Reference: Lou et al. 2024, Discrete Diffusion Modeling by Estimating the Ratios of the Data
    Distribution (SEDD), eq. 8 and Thm. 3.6.
    """
    return _bound(key, process, model_fn, x0, t, prediction, weight)
