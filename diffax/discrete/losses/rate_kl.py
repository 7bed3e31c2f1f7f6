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

`ctmc_elbo` and `score_entropy` are this bound with the model's rates read from a denoiser or a
concrete score; this module holds what they share.

Exact endpoints (t = 0, t = 1), for processes without an absorbing state such as `Uniform` and
`General` (nothing changes for an absorbing process, `mask_id` not None: no token is masked
where alpha = 1, and its rate scale is finite where alpha = 0):

* alpha(t) = 0 with a denoiser: both rate vectors equal pi_y / pi_x (the model's denoiser no
  longer matters) and the integrand beta (R_theta - R_c)^2 / R_c ~ -alpha' alpha^(2 gap - 1)
  tends to 0 when every row of P(0 -> t) converges to one law (`Uniform`; `General.ergodic`)
  at rate gap > 1/2 (`Process.rates_converge_at_alpha0`). That limit, 0, is returned (value and
  gradient). Otherwise t is refused.
* alpha(t) = 1 (t = 0, every schedule but geometric) with a denoiser: R_theta(y) ~
  p_theta(y | x_t) alpha / (1 - alpha) is infinite unless the denoiser is exactly one-hot;
  refused.
* beta(t) = inf with a concrete score (t = 1 when alpha(1) = 0; t = 0 for `PolynomialSchedule`
  with power < 1): the model's rates are scaled by beta(t) = inf; refused.

Refusals are `ValueError`s raised when `t` is concrete; under `jit` with traced times these points
give inf/NaN (the default stratified times never hit t = 0; pass `stratified_times(...,
t_max=...)` to keep clear of t = 1).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from diffax.core import batch_time
from diffax.core.arrays import log_one_hot
from diffax.core.validation import concrete_or_none
from diffax.discrete.losses.elbo_terms import ELBOTerms
from diffax.discrete.losses.endpoints import prior_kl, reconstruction
from diffax.discrete.losses.times import stratified_times
from diffax.discrete.parameterizations import (
    ModelFn,
    check_prediction,
    check_sequences,
    evaluate,
    reverse_rates,
)
from diffax.discrete.processes import Process


def check_endpoint_times(process: Process, t, prediction: str, loss: str) -> None:
    """Refuses concrete times at which the rate-KL integrand is infinite (module docstring).

    Raises a `ValueError` naming `t`, the allowed range and the reason; does nothing for traced
    `t` or for an absorbing process (`mask_id` not None).
    """
    if process.mask_id is not None or t is None:
        return
    sched = process.schedule
    values = concrete_or_none(
        lambda t: (sched.alpha(t), sched.one_minus_alpha(t), sched.rate(t)), t
    )
    if values is None:
        return
    alpha, one_minus, rate = values
    name = type(process).__name__
    if prediction == "denoiser":
        if np.any(one_minus == 0):
            raise ValueError(
                f"t must lie in (0, 1] for {loss} with prediction='denoiser' on {name} with "
                f"{type(sched).__name__} (got t = 0): alpha(0) = 1 makes the model's reverse "
                "rates p(y | x_t) alpha / (1 - alpha) infinite unless the denoiser is exactly "
                "one-hot; draw t from (0, 1] (e.g. stratified_times)"
            )
        if np.any(alpha == 0) and not process.rates_converge_at_alpha0:
            gap = getattr(process, "spectral_gap", None)
            detail = "" if gap is None else f" (gap {gap:.3g}, ergodic {process.ergodic})"
            raise ValueError(
                f"t must lie in [0, 1) for {loss} with prediction='denoiser' on this {name} (got "
                "t where alpha(t) = 0): the integrand only vanishes there for an ergodic "
                f"generator with spectral gap > 1/2{detail} "
                "(process.rates_converge_at_alpha0 is False); use "
                "stratified_times(..., t_max=...) < 1"
            )
    elif np.any(np.isinf(rate)):
        raise ValueError(
            f"t must lie in the open range where beta(t) is finite for {loss} with "
            f"prediction='concrete_score' on {name} with {type(sched).__name__}: beta(t) = inf "
            "at the given t scales the model's rates to infinity. Draw t from (0, 1) "
            "(e.g. stratified_times(..., t_max=1 - 1e-5))"
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
    t = batch_time(t, xt.shape[0])
    scale, log_model = reverse_rates(process, output, xt, t, prediction)
    _, log_true = process.reverse_rates(xt, t, log_p0=log_one_hot(x0, process.vocab_size))
    true = jnp.exp(log_true)
    # R_theta - R_c + R_c log(R_c / R_theta) = R_c h(x), h(x) = expm1(x) - x, x = log(R_theta /
    # R_c): no cancellation between O(1) terms when the rates nearly agree, which matters where
    # the scale beta(t) is large (near t = 1 it multiplies float32 rounding by 1 / alpha).
    has_true = true > 0
    x = log_model - jnp.where(has_true, log_true, 0.0)
    div = jnp.sum(jnp.where(has_true, true * (jnp.expm1(x) - x), jnp.exp(log_model)), axis=-1)
    scale = scale.reshape((-1,) + (1,) * (div.ndim - 1))
    # Where the two rate vectors agree exactly the integrand is 0 even if scale(t) is infinite.
    limit_zero = div == 0
    if prediction == "denoiser" and process.rates_converge_at_alpha0:
        # At alpha(t) = 0 the limit is 0 (module docstring); div holds only rounding there.
        alpha = process.alpha(t).reshape(scale.shape)
        limit_zero = limit_zero | (alpha == 0)
    # Double where: a zero (not inf) factor keeps the gradient of the unused branch finite.
    safe_scale = jnp.where(limit_zero, 0.0, scale)
    return jnp.where(limit_zero, 0.0, safe_scale * div)


def rate_kl_bound(
    key: jax.Array,
    process: Process,
    model_fn: ModelFn,
    x0: jax.Array,
    t: jax.Array | None,
    prediction: str,
    weight: jax.Array | None = None,
    loss: str = "ctmc_elbo",
) -> ELBOTerms:
    """The terms of the rate-KL negative ELBO (`ctmc_elbo`, `score_entropy`), each `[B]` nats.

    Args as `ctmc_elbo`; `loss` names the caller in error messages.
    """
    check_prediction(prediction)
    process.check_prediction(prediction)
    check_sequences(x0, process.vocab_size, "x0")
    check_endpoint_times(process, t, prediction, loss)
    key_t, key_x, key_0 = jax.random.split(key, 3)
    t = stratified_times(key_t, x0.shape[0]) if t is None else batch_time(t, x0.shape[0])
    xt = process.sample_marginal(key_x, x0, t)
    output = evaluate(model_fn, process, xt, t)
    terms = rate_kl_terms(process, output, x0, xt, t, prediction)
    diffusion = jnp.sum(terms.reshape(x0.shape[0], -1), axis=-1)
    if weight is not None:
        diffusion = diffusion * weight
    return ELBOTerms(
        prior=prior_kl(process, x0),
        reconstruction=reconstruction(key_0, process, model_fn, x0, prediction),
        diffusion=diffusion,
    )
