"""Continuous-time ELBO, per term (VDM style), in nats or in bits/dim for dequantized 8-bit data.

For continuous data y and a model of eps, with z_t ~ q(z_t | y):

    -log p(y) <= prior + reconstruction + diffusion, where
    prior          = KL(q(z_1 | y) || N(0, sigma(1)^2 I)) = alpha(1)^2 |y|^2 / (2 sigma(1)^2),
    reconstruction = -E log N(y; z_{t_min}/alpha, (sigma/alpha)^2 I) at t_min
                   = d (log(sigma/alpha) + log(2 pi)/2 + 1/2)   (expectation in closed form),
    diffusion      = 1/2 int_{t_min}^1 (-dlogSNR/dt) E|eps_hat - eps|^2 dt   (Monte Carlo in t).

Kingma et al. 2021, Variational Diffusion Models (eq. 17 and appendix); Song et al. 2021b,
Maximum Likelihood Training of Score-Based Diffusion Models.

For 8-bit data x in {0..255}^d, y = 2 (x + u)/256 - 1 with u ~ U[0, 1)^d (uniform
dequantization) gives -log2 P(x) <= E_u[-log2 p(y)] + d log2(256/2): the `dequantization` term
(7 bits/dim). Theis et al. 2016; Ho et al. 2019, Flow++.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from diffax.continuous.losses.time_samplers import TIME_SAMPLERS, TimeSampler, time_sampler_from
from diffax.continuous.parameterizations import ModelFn, make_denoiser
from diffax.continuous.processes import GaussianProcess
from diffax.core import check_positive_int, check_time
from diffax.core.arrays import event_size, sum_event
from diffax.core.validation import check_ndim, concrete_or_none, is_number


class ELBOTerms(NamedTuple):
    """Per-example terms of the negative ELBO, each `[B]`, all in the same unit.

    `total` = prior + reconstruction + diffusion + dequantization, an upper bound on -log p.
    """

    prior: jax.Array
    reconstruction: jax.Array
    diffusion: jax.Array
    dequantization: jax.Array

    @property
    def total(self) -> jax.Array:
        return self.prior + self.reconstruction + self.diffusion + self.dequantization


def elbo_terms(
    key: jax.Array,
    process: GaussianProcess,
    model_fn: ModelFn,
    y: jax.Array,
    *,
    prediction: str = "eps",
    t_min: float = 1e-5,
    num_time_samples: int = 1,
    time_sampler: str | TimeSampler = "importance",
) -> ELBOTerms:
    """Negative-ELBO terms in nats for continuous data `y: [B, ...]` (`dequantization` = 0).

    Args:
      key: PRNG key (times and noise).
      process: the Gaussian process.
      model_fn: `(x: [B, ...], t: [B]) -> [B, ...]` predicting `prediction`.
      y: `[B, ...]` data.
      prediction: the model's parameterization.
      t_min: start of the diffusion (the decoder acts there); 1e-5 by default. In [0, 1), and
        > 0 where sigma(0) = 0 (VP, sub-VP, flow paths): there the reconstruction term
        log(sigma/alpha) is -inf and the diffusion integral +inf.
      num_time_samples: Monte-Carlo samples of t per example for the diffusion term.
      time_sampler: a `TimeSampler` with `uniform_average=True` or its name: "importance"
        (logSNR-uniform; lowest variance for this weighting), "uniform", "stratified" ((u + i)/B
        with one shared u) or "antithetic" (pairs u, 1 - u); all unbiased for the same integral.
    """
    check_ndim(y, "y", "[B, ...] (a leading batch axis)", min_ndim=2)
    check_time(t_min, "t_min")
    if is_number(t_min) and not t_min < 1.0:
        raise ValueError(f"t_min must lie in [0, 1) (the diffusion covers [t_min, 1]); got {t_min}")
    sigma_min = concrete_or_none(lambda p, t: p.sigma(t), process, t_min)
    if sigma_min is not None and np.any(sigma_min == 0):
        raise ValueError(
            f"t_min must lie in (0, 1) for {type(process).__name__}, got t_min={t_min}: "
            "sigma(t_min) = 0 makes the reconstruction term -inf and the diffusion term +inf "
            "(the default is 1e-5)"
        )
    num_time_samples = check_positive_int(num_time_samples, "num_time_samples")
    sampler = time_sampler_from(time_sampler, {}, "time_sampler")
    if not sampler.uniform_average:
        unbiased = [n for n in TIME_SAMPLERS.names() if TIME_SAMPLERS.get(n)().uniform_average]
        raise ValueError(
            f"time_sampler={sampler.name!r} does not estimate the uniform-time integral of the "
            f"diffusion term; allowed values: {', '.join(unbiased)} (or a TimeSampler with "
            "uniform_average=True)"
        )
    denoise = make_denoiser(process, model_fn, prediction)
    batch, d = y.shape[0], event_size(y)
    one = jnp.ones((batch,), jnp.float32)

    a1, s1 = process.alpha(one), process.sigma(one)
    prior = 0.5 * jnp.square(a1 / s1) * sum_event(jnp.square(y))

    log_ratio = process.log_sigma(t_min) - process.log_alpha(t_min)
    recon = d * (log_ratio + 0.5 * math.log(2.0 * math.pi) + 0.5) * one

    def diffusion_sample(k):
        k_t, k_eps = jax.random.split(k)
        t, iw = sampler.sample(k_t, batch, process, t_min, 1.0)
        x_t, eps = process.marginal_sample(k_eps, y, t)
        _, eps_hat = denoise(x_t, t)
        # The uniform-time average times the interval length is the integral over [t_min, 1].
        rate = -process.dlog_snr_dt(t) * (1.0 - t_min)
        return 0.5 * iw * rate * sum_event(jnp.square(eps_hat - eps))

    keys = jax.random.split(key, num_time_samples)
    diffusion = jnp.mean(jax.vmap(diffusion_sample)(keys), axis=0)
    return ELBOTerms(prior, recon, diffusion, jnp.zeros((batch,), jnp.float32))


def dequantize_8bit(key: jax.Array, x: jax.Array) -> jax.Array:
    """Uniform dequantization of integer pixels `x: [B, ...]` in [0, 255] to float32 [-1, 1]."""
    if not jnp.issubdtype(x.dtype, jnp.integer):
        raise TypeError(f"x must hold integer 8-bit values, got dtype {x.dtype}")
    u = jax.random.uniform(key, x.shape, jnp.float32)
    return 2.0 * (x.astype(jnp.float32) + u) / 256.0 - 1.0


def elbo_bpd(
    key: jax.Array,
    process: GaussianProcess,
    model_fn: ModelFn,
    x: jax.Array,
    *,
    prediction: str = "eps",
    t_min: float = 1e-5,
    num_time_samples: int = 1,
    time_sampler: str | TimeSampler = "importance",
) -> ELBOTerms:
    """Negative ELBO of 8-bit data `x: [B, ...]` (integers in [0, 255]) in bits/dim, per term.

    The model acts on y = 2 (x + u)/256 - 1; `total` upper-bounds -log2 P(x) / d in expectation.
    Args as in `elbo_terms`.
    """
    key_u, key_elbo = jax.random.split(key)
    y = dequantize_8bit(key_u, x)
    terms = elbo_terms(
        key_elbo,
        process,
        model_fn,
        y,
        prediction=prediction,
        t_min=t_min,
        num_time_samples=num_time_samples,
        time_sampler=time_sampler,
    )
    scale = 1.0 / (event_size(x) * math.log(2.0))
    bins = math.log2(256 / 2) * jnp.ones((x.shape[0],), jnp.float32)
    return ELBOTerms(
        terms.prior * scale, terms.reconstruction * scale, terms.diffusion * scale, bins
    )
