"""Denoising score matching with weightings, and the time samplers that draw its t.

`dsm_loss` returns `importance_weight(t) * w(t) * mean((target_hat - target)^2)` per example,
the error measured in the weighting's *target space* for a model of any parameterization. The
weightings, written in their natural spaces (Kingma & Gao 2023, Understanding Diffusion
Objectives, Table 1 and appendix D):

| name            | space    | w(t)                                    | reference          |
|-----------------|----------|-----------------------------------------|--------------------|
| `eps`, `simple` | eps      | 1                                       | Ho et al. 2020     |
| `likelihood`    | eps      | g^2/sigma^2 = -dlogSNR/dt               | Song et al. 2021b  |
| `snr`           | x0       | min(SNR, gamma) (default gamma = inf)   | Hang et al. 2023   |
| `x0`            | x0       | 1                                       | Kingma et al. 2021 |
| `v`             | v        | 1                                       | Salimans & Ho 2022 |
| `edm`           | x0       | (s^2 + s_d^2)/(s s_d)^2, s = sigma/alpha | Karras et al. 2022 |
| `flow_matching` | velocity | 1                                       | Lipman et al. 2023 |

Time samplers return `(t [B], importance_weight [B])`: "uniform", "stratified" (VDM's
low-discrepancy sampler), "antithetic" (pairs u, 1 - u) and "importance" (logSNR-uniform, whose
weight makes it an unbiased, lower-variance estimate of the uniform-time objective; with the
likelihood weighting the product w * weight is constant) all estimate the *same* objective, the
average over t ~ U[t_min, t_max]. "lognormal" (EDM's log sigma ~ N(p_mean, p_std^2)) *defines* its
own objective and has weight 1.

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
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from diffax.continuous.parameterizations import PREDICTIONS, ModelFn, from_x0_eps
from diffax.continuous.processes import GaussianProcess
from diffax.core import Registry, batch_time, check_choice, check_shape, check_time
from diffax.core.arrays import TINY, expand_as
from diffax.core.validation import (
    check_ndim,
    check_number,
    check_time_range,
    concrete_or_none,
    is_number,
)

WeightFn = Callable[..., jax.Array]
WEIGHTINGS: Registry[tuple[str, WeightFn]] = Registry("loss weighting")
TIME_SAMPLERS: Registry[Callable] = Registry("time sampler")

_LOG_TINY = math.log(TINY)


def _register_weighting(name: str, space: str):
    def decorator(fn: WeightFn) -> WeightFn:
        WEIGHTINGS.register(name)((space, fn))
        return fn

    return decorator


def _ends(process: GaussianProcess, t: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Exact-zero flags `(alpha(t) == 0, sigma(t) == 0, d sigma/dt = inf)`: the singular points.

    d sigma^2/dt = g^2 + 2 f sigma^2, so at sigma = 0 with g^2 > 0 sigma grows like sqrt(t) (VP).
    """
    sigma0 = process.sigma(t) == 0
    return process.alpha(t) == 0, sigma0, sigma0 & (process.g2(t) > 0)


@_register_weighting("eps", "eps")
@_register_weighting("x0", "x0")
@_register_weighting("v", "v")
@_register_weighting("flow_matching", "velocity")
def _unit_weight(process, t, **_):
    return jnp.ones_like(t)


WEIGHTINGS.register("simple")(WEIGHTINGS.get("eps"))


@_register_weighting("likelihood", "eps")
def _likelihood_weight(process, t, **_):
    # -dlogSNR/dt = 2 (sigma'/sigma - alpha'/alpha) is infinite where sigma or alpha vanishes; the
    # process clips it to the largest float32, the weight says inf.
    alpha0, sigma0, _ = _ends(process, t)
    return jnp.where(alpha0 | sigma0, jnp.inf, -process.dlog_snr_dt(t))


@_register_weighting("snr", "x0")
def _min_snr_weight(process, t, snr_gamma: float = float("inf"), **_):
    return jnp.minimum(jnp.exp(process.log_snr(t)), snr_gamma)


@_register_weighting("edm", "x0")
def _edm_weight(process, t, sigma_data: float = 0.5, **_):
    # (s^2 + s_d^2) / (s^2 s_d^2) = 1/s_d^2 + SNR with s = sigma/alpha: finite (1/s_d^2) where
    # alpha = 0, instead of inf/inf.
    return 1.0 / sigma_data**2 + jnp.exp(process.log_snr(t))


_BUILT_IN_WEIGHTS = (_unit_weight, _likelihood_weight, _min_snr_weight, _edm_weight)


def _check_options(options: dict) -> None:
    gamma = options.get("snr_gamma", float("inf"))
    if is_number(gamma) and not gamma > 0:
        raise ValueError(f"snr_gamma must be > 0 (inf for no cap), got {gamma}")
    check_number(options.get("sigma_data", 0.5), "sigma_data", low=0.0)


def _weight_singular(fn: WeightFn, alpha0, sigma0, gamma) -> jax.Array | None:
    """Where w(t) itself is infinite, for the built-in weights; None for other weights."""
    if fn is _unit_weight:
        return jnp.zeros_like(alpha0)
    if fn is _likelihood_weight:
        return alpha0 | sigma0
    if fn is _min_snr_weight:
        return sigma0 & jnp.isinf(gamma)
    if fn is _edm_weight:
        return sigma0
    return None


def _allowed_range(t: np.ndarray, bad: np.ndarray) -> str:
    at = np.broadcast_to(t, bad.shape)[bad]
    if np.all(at == 0):
        return "(0, 1]"
    if np.all(at == 1):
        return "[0, 1)"
    return "the range where alpha(t) > 0 and sigma(t) > 0"


def loss_weight(name: str, process: GaussianProcess, t: jax.Array, **options) -> jax.Array:
    """The weight w(t) `[B]` of weighting `name` (its space: `WEIGHTINGS.get(name)[0]`).

    Exact at t = 0 and t = 1 where w has a finite limit (e.g. edm where alpha = 0: 1/s_d^2). Where
    w is infinite (snr without a cap and edm where sigma = 0; likelihood where sigma or alpha
    = 0) a concrete `t` is refused with a `ValueError`; traced times give inf there.
    """
    space, fn = WEIGHTINGS.get(name, "weighting")
    check_time(t, "t")
    _check_options(options)
    gamma = options.get("snr_gamma", float("inf"))

    def singular(process, t, gamma):
        return _weight_singular(fn, *_ends(process, t)[:2], gamma)

    if fn in _BUILT_IN_WEIGHTS:
        bad = concrete_or_none(singular, process, t, gamma)
        if bad is not None and np.any(bad):
            raise ValueError(
                f"t must lie in {_allowed_range(np.asarray(t), np.asarray(bad))} for weighting "
                f"{name!r} on {type(process).__name__}: the weight is infinite at the given t "
                "(alpha(t) = 0 or sigma(t) = 0)"
            )
    return fn(process, jnp.asarray(t, jnp.float32), **options)


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
# alpha = 0), and the infinite ones are flagged (`_loss_singular`) rather than returned as NaN.

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


def _log_weight(fn: WeightFn, process, t, lg: _Logs, **options) -> jax.Array:
    """log w(t), in forms that stay finite at the ends for the built-in weights."""
    lam = 2.0 * (lg.log_alpha - lg.log_sigma)  # logSNR with the same floors as J_eps, J_x0
    if fn is _unit_weight:
        return jnp.zeros_like(t)
    if fn is _likelihood_weight:
        return jnp.log(-process.dlog_snr_dt(t))
    if fn is _min_snr_weight:
        return jnp.minimum(lam, jnp.log(options.get("snr_gamma", jnp.inf)))
    if fn is _edm_weight:
        return jnp.logaddexp(-2.0 * jnp.log(options.get("sigma_data", 0.5)), lam)
    return jnp.log(fn(process, t, **options))


def _loss_singular(fn, space, pred_space, alpha0, sigma0, dsigma_inf, gamma):
    """Where W |out - target|^2 has no finite limit (built-in weights); None for other weights.

    An eps prediction cannot determine x0 where alpha = 0 (x0 = (x_t - sigma eps)/alpha), an x0
    prediction cannot determine eps where sigma = 0; the likelihood weight is infinite where
    sigma = 0 and the velocity where d sigma/dt is.
    """
    no_x0 = (pred_space == "eps") & alpha0
    no_eps = (pred_space == "x0") & sigma0
    if fn is _unit_weight:
        bad = (no_x0 & (space != "eps")) | (no_eps & (space != "x0"))
        return bad | (dsigma_inf & (space == "velocity"))
    if fn is _likelihood_weight:
        return sigma0 | no_x0
    if fn is _min_snr_weight:
        return no_eps & jnp.isinf(gamma)
    if fn is _edm_weight:
        return no_x0 | no_eps
    return None


def _dsm_terms(process, weighting, prediction, out, x0, eps, t, options):
    """`(W-weighted mean squared error [B], singular [B])` for a model output `out`."""
    space, fn = WEIGHTINGS.get(weighting, "weighting")
    pred_space = _SPACE[prediction]
    lg = _logs(process, t)
    log_w = _log_weight(fn, process, t, lg, **options) + _log_j2(space, lg)
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
    alpha0, sigma0, dsigma_inf = _ends(process, t)
    gamma = options.get("snr_gamma", jnp.inf)
    singular = _loss_singular(fn, space, pred_space, alpha0, sigma0, dsigma_inf, gamma)
    weight = jnp.exp(log_w)
    if singular is None:
        singular = ~jnp.isfinite(weight)
    return jnp.where(singular, 0.0, weight) * mse, singular


def _check_loss_times(process, weighting, prediction, t, options) -> None:
    """Refuses a concrete `t` at which the weighted loss has no finite limit."""
    space, fn = WEIGHTINGS.get(weighting, "weighting")
    pred_space = _SPACE[prediction]
    gamma = options.get("snr_gamma", float("inf"))

    def flags(process, t, gamma):
        alpha0, sigma0, dsigma_inf = _ends(process, t)
        bad = _loss_singular(fn, space, pred_space, alpha0, sigma0, dsigma_inf, gamma)
        return alpha0, sigma0, bad

    values = concrete_or_none(flags, process, t, gamma)
    if values is None or values[2] is None or not np.any(values[2]):
        return
    alpha0, sigma0, bad = values
    if np.any(bad & (pred_space == "eps") & alpha0):
        why = f"alpha(t) = 0, where a {prediction!r} prediction does not determine x0"
    elif np.any(bad & (pred_space == "x0") & sigma0):
        why = "sigma(t) = 0, where an 'x0' prediction does not determine eps"
    elif weighting == "likelihood":
        why = "sigma(t) = 0, where the likelihood weight g^2/sigma^2 is infinite"
    else:
        why = "d sigma/dt = inf at t = 0 for this process, so the velocity target is infinite"
    raise ValueError(
        f"t must lie in {_allowed_range(np.asarray(t), np.asarray(bad))} for weighting="
        f"{weighting!r} with prediction={prediction!r} on {type(process).__name__}: {why}, "
        "and the weighted loss is infinite there"
    )


@TIME_SAMPLERS.register("uniform")
def _uniform_times(key, batch, process, t_min, t_max, **_):
    t = jax.random.uniform(key, (batch,), minval=t_min, maxval=t_max)
    return t, jnp.ones((batch,))


@TIME_SAMPLERS.register("stratified")
def _stratified_times(key, batch, process, t_min, t_max, **_):
    u = jnp.mod(jax.random.uniform(key, ()) + jnp.arange(batch) / batch, 1.0)
    return t_min + (t_max - t_min) * u, jnp.ones((batch,))


@TIME_SAMPLERS.register("antithetic")
def _antithetic_times(key, batch, process, t_min, t_max, **_):
    half = (batch + 1) // 2
    u = jax.random.uniform(key, (half,))
    u = jnp.concatenate([u, 1.0 - u])[:batch]
    return t_min + (t_max - t_min) * u, jnp.ones((batch,))


@TIME_SAMPLERS.register("importance")
def _importance_times(key, batch, process, t_min, t_max, **_):
    lam_hi, lam_lo = process.log_snr(t_min), process.log_snr(t_max)
    lam = lam_lo + (lam_hi - lam_lo) * jax.random.uniform(key, (batch,))
    t = jnp.clip(process.t_from_log_snr(lam), t_min, t_max)
    # p(t) = |dlogSNR/dt| / (lam_hi - lam_lo); weight = U(t) / p(t).
    weight = (lam_hi - lam_lo) / ((t_max - t_min) * -process.dlog_snr_dt(t))
    return t, weight


@TIME_SAMPLERS.register("lognormal")
def _lognormal_times(key, batch, process, t_min, t_max, p_mean=-1.2, p_std=1.2, **_):
    log_s = p_mean + p_std * jax.random.normal(key, (batch,))
    t = jnp.clip(process.t_from_log_snr(-2.0 * log_s), t_min, t_max)
    return t, jnp.ones((batch,))


def sample_times(
    key: jax.Array,
    batch: int,
    process: GaussianProcess,
    *,
    sampler: str = "uniform",
    t_min: float = 1e-5,
    t_max: float = 1.0,
    **options,
) -> tuple[jax.Array, jax.Array]:
    """Draws `(t [B], importance_weight [B])` with a named time sampler.

    Args:
      key: PRNG key.
      batch: B.
      process: the process (logSNR-based samplers need it).
      sampler: "uniform", "stratified", "antithetic", "importance" or "lognormal".
      t_min, t_max: time range, 0 <= t_min < t_max <= 1 (t_min default 1e-5, Song et al. 2021).
      **options: `p_mean`, `p_std` (> 0) for "lognormal" (EDM: -1.2, 1.2).

    Reference: Kingma et al. 2021, VDM (low-discrepancy sampler); Song et al. 2021b, Maximum
    Likelihood Training of Score-Based Diffusion Models (importance sampling); Karras et al. 2022.
    """
    check_time_range(t_min, t_max)
    check_number(options.get("p_mean", -1.2), "p_mean")
    check_number(options.get("p_std", 1.2), "p_std", low=0.0)
    fn = TIME_SAMPLERS.get(sampler, "time_sampler")
    return fn(key, batch, process, t_min, t_max, **options)


def dsm_loss(
    key: jax.Array,
    process: GaussianProcess,
    model_fn: ModelFn,
    x0: jax.Array,
    *,
    prediction: str = "eps",
    weighting: str = "eps",
    time_sampler: str = "uniform",
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
      weighting: a name in `WEIGHTINGS` (table in the module docstring).
      time_sampler: a name in `TIME_SAMPLERS`; ignored if `t` is given.
      t: optional fixed times (scalar or `[B]`), importance weight 1.
      t_min, t_max: time range of the time sampler, 0 <= t_min < t_max <= 1.
      **options: `snr_gamma` ("snr", > 0, default inf), `sigma_data` ("edm", > 0, default 0.5),
        `p_mean`, `p_std` ("lognormal").

    Returns:
      `importance_weight * w(t) * mean over event dims of (target_hat - target)^2`, `[B]`.
      At t = 0 and t = 1 this is its limit where that is finite (for instance "snr" with an eps
      model where sigma = 0 is the eps loss); where it is infinite for a generic model (an eps
      model where alpha = 0 under a weighting that sees x0, an x0 model where sigma = 0 under one
      that sees eps, "likelihood" where sigma = 0, the velocity of VP at t = 0) a concrete `t` is
      refused with a `ValueError` and traced times give inf.
      Reference: Vincent 2011; Ho et al. 2020; Song et al. 2021.
    """
    WEIGHTINGS.get(weighting, "weighting")
    check_choice(prediction, PREDICTIONS, "prediction")
    check_ndim(x0, "x0", "[B, ...] (a leading batch axis)", min_ndim=2)
    check_time_range(t_min, t_max)
    _check_options(options)
    key_t, key_eps = jax.random.split(key)
    batch = x0.shape[0]
    time_opts = {k: options.pop(k) for k in ("p_mean", "p_std") if k in options}
    if t is None:
        t, iw = sample_times(
            key_t, batch, process, sampler=time_sampler, t_min=t_min, t_max=t_max, **time_opts
        )
    else:
        _check_loss_times(process, weighting, prediction, t, options)
        t, iw = batch_time(t, batch), jnp.ones((batch,))
    x_t, eps = process.marginal_sample(key_eps, x0, t)
    out = model_fn(x_t, t)
    check_shape(out, x0.shape, "model_fn output")
    weighted, singular = _dsm_terms(process, weighting, prediction, out, x0, eps, t, options)
    return jnp.where(singular, jnp.inf, iw * weighted)
