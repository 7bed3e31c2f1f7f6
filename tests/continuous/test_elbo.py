"""Continuous-time ELBO: a bound on the true NLL for exact models, and its terms."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffax.continuous as dc

from .box_mixture import BoxMixture


def test_elbo_bounds_gaussian_nll():
    process = dc.VP()
    gm = dc.GaussianMixture(jnp.ones(1), jnp.asarray([[0.3, -0.2]]), jnp.asarray([[0.5, 0.8]]))
    y = gm.sample(jax.random.PRNGKey(0), 8192)
    terms = jax.jit(
        lambda y: dc.elbo_terms(
            jax.random.PRNGKey(1), process, gm.model_fn(process, "eps"), y, num_time_samples=8
        )
    )(y)
    nll = -gm.log_prob(y)
    per_dim = lambda v: float(v.mean()) / 2
    gap = per_dim(terms.total) - per_dim(nll)
    se = float((terms.total - nll).std()) / math.sqrt(y.shape[0]) / 2
    # With the exact model the bound is tight as t_min -> 0 (analytic gap ~ 3e-6 nats/dim here),
    # so the Monte-Carlo estimate must be within noise of 0 (and never significantly below).
    assert -4 * se < gap < 4 * se + 0.01, (gap, se)
    one = jnp.ones(())
    prior = 0.5 * (process.alpha(one) / process.sigma(one)) ** 2 * jnp.sum(y**2, -1)
    np.testing.assert_allclose(terms.prior, prior, rtol=1e-5)
    np.testing.assert_array_equal(terms.dequantization, 0.0)


def test_elbo_bpd_of_8bit_data_bounds_the_true_nll():
    """Four equiprobable levels per dimension: the true NLL is 2 bits/dim.

    The Gaussian decoder at t_min blurs the box edges (width 2/256 against sigma/alpha(t_min)):
    the gap is ~0.3 bits/dim at t_min = 1e-5 and ~0 at 1e-6.
    """
    process = dc.VP()
    box = BoxMixture([16, 80, 144, 208])
    x = box.sample(jax.random.PRNGKey(0), (2048, 3))
    terms = jax.jit(
        lambda x: dc.elbo_bpd(
            jax.random.PRNGKey(1), process, box.model_fn(process), x, num_time_samples=8, t_min=1e-6
        )
    )(x)
    np.testing.assert_allclose(terms.dequantization, 7.0)
    total = terms.total
    se = float(total.std()) / math.sqrt(total.shape[0])
    assert float(total.mean()) > 2.0 - 3 * se
    assert float(total.mean()) < 2.3, float(total.mean())


def test_elbo_time_samplers():
    """Every sampler that estimates the uniform-time integral gives an unbiased diffusion term, by
    name or as an object (same draws); "lognormal" defines its own law and is refused."""
    process = dc.VP()
    gm = dc.GaussianMixture(jnp.ones(1), jnp.asarray([[0.3, -0.2]]), jnp.asarray([[0.5, 0.8]]))
    y = gm.sample(jax.random.PRNGKey(0), 64)
    model, key = gm.model_fn(process, "eps"), jax.random.PRNGKey(1)
    by_name = dc.elbo_terms(key, process, model, y, time_sampler="stratified")
    by_object = dc.elbo_terms(key, process, model, y, time_sampler=dc.time_samplers.stratified())
    np.testing.assert_array_equal(by_name.diffusion, by_object.diffusion)
    with pytest.raises(ValueError, match="'lognormal' does not estimate.*antithetic"):
        dc.elbo_terms(key, process, model, y, time_sampler="lognormal")
    with pytest.raises(ValueError, match="unknown time sampler 'sobol'"):
        dc.elbo_terms(key, process, model, y, time_sampler="sobol")
