"""Denoising score matching with weightings, and the time samplers that draw its t.

`dsm_loss` converts the model output (any parameterization) and the true (x_0, eps) to the
weighting's *target space* and returns `importance_weight(t) * w(t) * mean((target_hat -
target)^2)` per example. The weightings, written in their natural spaces (Kingma & Gao 2023,
Understanding Diffusion Objectives, Table 1 and appendix D):

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
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from diffax.continuous.parameterizations import ModelFn, from_x0_eps, to_x0_eps
from diffax.continuous.processes import GaussianProcess
from diffax.core import Registry, batch_time, check_shape, check_time

WeightFn = Callable[..., jax.Array]
WEIGHTINGS: Registry[tuple[str, WeightFn]] = Registry("loss weighting")
TIME_SAMPLERS: Registry[Callable] = Registry("time sampler")


def _register_weighting(name: str, space: str):
    def decorator(fn: WeightFn) -> WeightFn:
        WEIGHTINGS.register(name)((space, fn))
        return fn

    return decorator


@_register_weighting("eps", "eps")
@_register_weighting("x0", "x0")
@_register_weighting("v", "v")
@_register_weighting("flow_matching", "velocity")
def _unit_weight(process, t, **_):
    return jnp.ones_like(t)


WEIGHTINGS.register("simple")(WEIGHTINGS.get("eps"))


@_register_weighting("likelihood", "eps")
def _likelihood_weight(process, t, **_):
    return -process.dlog_snr_dt(t)


@_register_weighting("snr", "x0")
def _min_snr_weight(process, t, snr_gamma: float = float("inf"), **_):
    return jnp.minimum(jnp.exp(process.log_snr(t)), snr_gamma)


@_register_weighting("edm", "x0")
def _edm_weight(process, t, sigma_data: float = 0.5, **_):
    s2 = jnp.exp(-process.log_snr(t))  # (sigma/alpha)^2
    return (s2 + sigma_data**2) / (s2 * sigma_data**2)


def loss_weight(name: str, process: GaussianProcess, t: jax.Array, **options) -> jax.Array:
    """The weight w(t) `[B]` of weighting `name` (its space: `WEIGHTINGS.get(name)[0]`)."""
    return WEIGHTINGS.get(name, "weighting")[1](process, t, **options)


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
      t_min, t_max: time range (t_min default 1e-5, Song et al. 2021).
      **options: `p_mean`, `p_std` for "lognormal" (EDM: -1.2, 1.2).

    Reference: Kingma et al. 2021, VDM (low-discrepancy sampler); Song et al. 2021b, Maximum
    Likelihood Training of Score-Based Diffusion Models (importance sampling); Karras et al. 2022.
    """
    check_time(t_min, "t_min")
    check_time(t_max, "t_max")
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
      t_min, t_max: time range of the time sampler.
      **options: `snr_gamma` ("snr"), `sigma_data` ("edm", default 0.5), `p_mean`, `p_std`
        ("lognormal").

    Returns:
      `importance_weight * w(t) * mean over event dims of (target_hat - target)^2`, `[B]`.
      Reference: Vincent 2011; Ho et al. 2020; Song et al. 2021.
    """
    space, weight_fn = WEIGHTINGS.get(weighting, "weighting")
    key_t, key_eps = jax.random.split(key)
    batch = x0.shape[0]
    if t is None:
        time_opts = {k: options.pop(k) for k in ("p_mean", "p_std") if k in options}
        t, iw = sample_times(
            key_t, batch, process, sampler=time_sampler, t_min=t_min, t_max=t_max, **time_opts
        )
    else:
        t, iw = batch_time(t, batch), jnp.ones((batch,))
    x_t, eps = process.marginal_sample(key_eps, x0, t)
    out = model_fn(x_t, t)
    check_shape(out, x0.shape, "model_fn output")
    x0_hat, eps_hat = to_x0_eps(process, prediction, out, x_t, t)
    err = from_x0_eps(process, space, x0_hat, eps_hat, t) - from_x0_eps(process, space, x0, eps, t)
    mse = jnp.mean(jnp.square(err).reshape(batch, -1), axis=-1)
    return iw * weight_fn(process, t, **options) * mse
