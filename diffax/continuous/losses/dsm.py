"""Denoising score matching: `dsm_loss` and the weight `loss_weight`, exact at t = 0 and t = 1.

`dsm_loss` returns `importance_weight(t) * w(t) * mean((target_hat - target)^2)` per example, the
error measured in the weighting's *target space* for a model of any parameterization.

Exact ends. The error in any target space is a fixed multiple of the error in the model's own
space, so the loss is computed there with the combined weight (see "the loss in the model's own
space" below); at t = 0 and t = 1 it is the limit wherever that is finite, e.g. "snr" with an eps
model where sigma = 0 (the eps loss) or "edm" with an x0 model where alpha = 0 (1/s_d^2 times the
x0 error). Where the limit is infinite for a generic model, a concrete `t` is refused with a
`ValueError` naming it, and traced times give inf (with a zero, not NaN, gradient):

* alpha = 0 (t = 1 for RectifiedFlow, Cosine), eps or score model: x0 = (x_t - sigma eps)/alpha is
  not determined, so every weighting but "eps" and "snr" is infinite;
* sigma = 0 (t = 0 for VP, sub-VP, RectifiedFlow, Cosine), x0 model: eps is not determined, so
  every weighting but "x0" (and "snr" with a finite `snr_gamma`) is infinite;
* "likelihood" where sigma = 0 (g^2/sigma^2 = inf), and where alpha = 0 with an eps/score model;
* "flow_matching" at t = 0 for VP (sigma ~ sqrt(t), so the velocity target is infinite).

`loss_weight` likewise returns w(t)'s finite limits and refuses infinite ones.

The loss reads the raw model output rather than the (x0, eps) pair of
`parameterizations.make_denoiser`: converting to (x0, eps) first would lose the exact limits above.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from diffax.continuous.losses.named import build, check_named_options, option_names
from diffax.continuous.losses.time_samplers import OPTION_NAMES as TIME_OPTION_NAMES
from diffax.continuous.losses.time_samplers import TIME_SAMPLERS, TimeSampler, time_sampler_from
from diffax.continuous.losses.weightings import OPTION_NAMES as WEIGHTING_OPTION_NAMES
from diffax.continuous.losses.weightings import (
    WEIGHTINGS,
    Weighting,
    check_weighting,
    ends,
)
from diffax.continuous.parameterizations import PREDICTIONS, ModelFn, from_x0_eps
from diffax.continuous.processes import GaussianProcess
from diffax.core import batch_time, check_choice, check_shape, check_time
from diffax.core.arrays import TINY, expand_as
from diffax.core.validation import check_ndim, check_time_range, concrete_or_none

_LOG_TINY = math.log(TINY)


def weighting_from(weighting: str | Weighting, options: dict, argument: str) -> Weighting:
    """The `Weighting` for a name (with its loss options) or an object (no options)."""
    out = build(WEIGHTINGS, weighting, argument, options, WEIGHTING_OPTION_NAMES, Weighting)
    return check_weighting(out, argument)


def _describe(value: object) -> str:
    if isinstance(value, str):
        return repr(value)
    return (
        f"<{type(value).__name__} {getattr(value, 'name', '')!r}: an object binds its own options>"
    )


def _allowed_range(t: np.ndarray, bad: np.ndarray) -> str:
    at = np.broadcast_to(t, bad.shape)[bad]
    if np.all(at == 0):
        return "(0, 1]"
    if np.all(at == 1):
        return "[0, 1)"
    return "the range where alpha(t) > 0 and sigma(t) > 0"


def loss_weight(
    weighting: str | Weighting, process: GaussianProcess, t: jax.Array, **options
) -> jax.Array:
    """The weight w(t), shaped like `t` (usually `[B]`), of a weighting (object or name).

    Exact at t = 0 and t = 1 where w has a finite limit (e.g. edm where alpha = 0: 1/s_d^2). Where
    w is infinite (snr without a cap and edm where sigma = 0; likelihood where sigma or alpha
    = 0) a concrete `t` is refused with a `ValueError`; traced times give inf there.
    `options`: the named weighting's (`snr_gamma` for "snr", `sigma_data` for "edm").
    """
    w = weighting_from(weighting, options, "weighting")
    check_time(t, "t")
    if w.infinite is not None:
        bad = concrete_or_none(lambda p, u: w.infinite(ends(p, u)), process, t)
        if bad is not None and np.any(bad):
            raise ValueError(
                f"t must lie in {_allowed_range(np.asarray(t), np.asarray(bad))} for weighting "
                f"{w.name!r} on {type(process).__name__}: the weight is infinite at the given t "
                "(alpha(t) = 0 or sigma(t) = 0)"
            )
    return w.weight(process, jnp.asarray(t, jnp.float32))


# -- the loss in the model's own space ---------------------------------------------------------
#
# Both (x0_hat, eps_hat) and (x0, eps) satisfy x_t = alpha x0 + sigma eps, so the model's error is
# (x0_hat - x0, eps_hat - eps) = D (-sigma, alpha) for one field D, and the error of a target
# c1 x0 + c2 eps is J D with J = alpha c2 - sigma c1: J_eps = alpha, J_x0 = -sigma,
# J_v = alpha^2 + sigma^2, J_velocity = alpha sigma' - sigma alpha'
# (score_hat = -eps_hat / sigma is handled as eps_hat). A weighting w in space s applied to a model
# predicting p is therefore W |out - target_p|^2 with W = w J_s^2 / J_p^2, computed in logs with
# alpha and sigma floored at TINY on both sides, so that every finite limit at t = 0 or 1 comes
# out exactly (SNR |x0_hat - x0|^2 = |eps_hat - eps|^2 at sigma = 0; 1/s_d^2 |x0_hat - x0|^2 at
# alpha = 0), and the infinite ones are flagged (`Weighting.loss_infinite`) rather than NaN.

_SPACE = {"eps": "eps", "score": "eps", "x0": "x0", "v": "v", "velocity": "velocity"}


class _Logs(NamedTuple):
    alpha: jax.Array
    sigma: jax.Array
    log_alpha: jax.Array  # floored at log(TINY), as is log_sigma
    log_sigma: jax.Array
    dalpha: jax.Array
    dsigma: jax.Array
    det: jax.Array  # J_velocity, >= TINY


def _logs(process: GaussianProcess, t: jax.Array) -> _Logs:
    a, s = process.alpha(t), process.sigma(t)
    da, ds = process.alpha_sigma_dt(t)
    return _Logs(
        a,
        s,
        jnp.maximum(process.log_alpha(t), _LOG_TINY),
        jnp.maximum(process.log_sigma(t), _LOG_TINY),
        da,
        ds,
        jnp.maximum(a * ds - s * da, TINY),
    )


def _log_j2(space: str, lg: _Logs) -> jax.Array:
    """2 log |J_space| (see above)."""
    if space == "eps":
        return 2.0 * lg.log_alpha
    if space == "x0":
        return 2.0 * lg.log_sigma
    if space == "v":
        return 2.0 * jnp.log(lg.alpha * lg.alpha + lg.sigma * lg.sigma)
    return 2.0 * jnp.log(lg.det)


def _dsm_terms(process, w: Weighting, prediction, out, x0, eps, t):
    """`(W-weighted mean squared error [B], singular [B])` for a model output `out`."""
    pred_space = _SPACE[prediction]
    lg = _logs(process, t)
    log_snr = 2.0 * (lg.log_alpha - lg.log_sigma)  # with the same floors as J_eps, J_x0
    if w.log_weight is None:
        log_w = jnp.log(w.weight(process, t))
    else:
        log_w = w.log_weight(process, t, log_snr)
    log_w = log_w + _log_j2(w.space, lg)
    batch = x0.shape[0]
    if pred_space == "velocity":
        # Normalised by J_velocity first: the velocity is infinite at t = 0 for VP, its ratio to
        # J_velocity is not.
        det = expand_as(lg.det, x0)
        err = (out - expand_as(lg.dalpha, x0) * x0) / det - expand_as(lg.dsigma, x0) / det * eps
    else:
        log_w = log_w - _log_j2(pred_space, lg)
        if prediction == "score":
            out = -expand_as(lg.sigma, x0) * out
        err = out - from_x0_eps(process, pred_space, x0, eps, t)
    mse = jnp.mean(jnp.square(err).reshape(batch, -1), axis=-1)
    weight = jnp.exp(log_w)
    if w.loss_infinite is None:
        singular = ~jnp.isfinite(weight)
    else:
        singular = w.loss_infinite(pred_space, ends(process, t))
    return jnp.where(singular, 0.0, weight) * mse, singular


def _check_loss_times(process, w: Weighting, prediction, t) -> None:
    """Refuses a concrete `t` at which the weighted loss has no finite limit."""
    if w.loss_infinite is None:
        return
    pred_space = _SPACE[prediction]

    def flags(process, t):
        e = ends(process, t)
        return e.alpha0, e.sigma0, w.loss_infinite(pred_space, e)

    values = concrete_or_none(flags, process, t)
    if values is None or not np.any(values[2]):
        return
    alpha0, sigma0, bad = values
    if np.any(bad & (pred_space == "eps") & alpha0):
        why = f"alpha(t) = 0, where a {prediction!r} prediction does not determine x0"
    elif np.any(bad & (pred_space == "x0") & sigma0):
        why = "sigma(t) = 0, where an 'x0' prediction does not determine eps"
    elif w.name == "likelihood":
        why = "sigma(t) = 0, where the likelihood weight g^2/sigma^2 is infinite"
    elif w.space == "velocity":
        why = "d sigma/dt = inf at t = 0 for this process, so the velocity target is infinite"
    else:
        why = "the weight is infinite there"
    raise ValueError(
        f"t must lie in {_allowed_range(np.asarray(t), np.asarray(bad))} for weighting="
        f"{w.name!r} with prediction={prediction!r} on {type(process).__name__}: {why}, "
        "and the weighted loss is infinite there"
    )


def dsm_loss(
    key: jax.Array,
    process: GaussianProcess,
    model_fn: ModelFn,
    x0: jax.Array,
    *,
    prediction: str = "eps",
    weighting: str | Weighting = "eps",
    time_sampler: str | TimeSampler = "uniform",
    t: jax.Array | None = None,
    t_min: float = 1e-5,
    t_max: float = 1.0,
    **options,
) -> jax.Array:
    """Denoising score-matching loss per example, `[B]` (average it for the batch loss).

    Args:
      key: PRNG key (times and noise).
      process: the Gaussian process.
      model_fn: `(x_t: [B, ...], t: [B]) -> [B, ...]` predicting `prediction`.
      x0: `[B, ...]` clean data.
      prediction: the model's parameterization.
      weighting: a `Weighting` (`diffax.continuous.weightings.edm(sigma_data=0.5)`, ...) or a
        name in `WEIGHTINGS` (see `diffax.continuous.weightings`).
      time_sampler: a `TimeSampler` or a name in `TIME_SAMPLERS`; ignored if `t` is given.
      t: optional fixed times (scalar or `[B]`), importance weight 1.
      t_min, t_max: time range of the time sampler, 0 <= t_min < t_max <= 1.
      **options: the options of a weighting or time sampler given by name: `snr_gamma` ("snr",
        > 0, default inf), `sigma_data` ("edm", > 0, default 0.5), `p_mean`, `p_std`
        ("lognormal"). Any other option, or one the chosen weighting or sampler does not take, is
        an error that lists the allowed ones.

    Returns:
      `importance_weight * w(t) * mean over event dims of (target_hat - target)^2`, `[B]`.
      At t = 0 and t = 1 this is its limit where that is finite (for instance "snr" with an eps
      model where sigma = 0 is the eps loss); where it is infinite for a generic model (an eps
      model where alpha = 0 under a weighting that sees x0, an x0 model where sigma = 0 under one
      that sees eps, "likelihood" where sigma = 0, the velocity of VP at t = 0) a concrete `t` is
      refused with a `ValueError` and traced times give inf.
      Reference: Vincent 2011; Ho et al. 2020; Song et al. 2021.
    """
    w_names = option_names(WEIGHTINGS, weighting, WEIGHTING_OPTION_NAMES, "weighting")
    ts_names = option_names(TIME_SAMPLERS, time_sampler, TIME_OPTION_NAMES, "time_sampler")
    check_named_options(
        options,
        [*w_names, *ts_names],
        f"dsm_loss(weighting={_describe(weighting)}, time_sampler={_describe(time_sampler)})",
    )
    w = weighting_from(weighting, {k: v for k, v in options.items() if k in w_names}, "weighting")
    sampler = time_sampler_from(
        time_sampler, {k: v for k, v in options.items() if k in ts_names}, "time_sampler"
    )
    check_choice(prediction, PREDICTIONS, "prediction")
    check_ndim(x0, "x0", "[B, ...] (a leading batch axis)", min_ndim=2)
    check_time_range(t_min, t_max)
    key_t, key_eps = jax.random.split(key)
    batch = x0.shape[0]
    if t is None:
        t, iw = sampler.sample(key_t, batch, process, t_min, t_max)
    else:
        _check_loss_times(process, w, prediction, t)
        t, iw = batch_time(t, batch), jnp.ones((batch,))
    x_t, eps = process.marginal_sample(key_eps, x0, t)
    out = model_fn(x_t, t)
    check_shape(out, x0.shape, "model_fn output")
    weighted, singular = _dsm_terms(process, w, prediction, out, x0, eps, t)
    return jnp.where(singular, jnp.inf, iw * weighted)
