"""Parameterizations: round trips, analytic values for Gaussian data, edges, EDM scalings."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffax.continuous as dc

from .conftest import ALL_PROCESSES

NAMES = sorted(ALL_PROCESSES)
PAIRS = list(itertools.permutations(dc.PREDICTIONS, 2))


def _batch(key, n=6, d=3):
    k1, k2 = jax.random.split(key)
    return jax.random.normal(k1, (n, d)), jax.random.normal(k2, (n, d))


@pytest.mark.parametrize("name", NAMES)
def test_round_trips_are_identity(name):
    process = ALL_PROCESSES[name]
    x, out = _batch(jax.random.PRNGKey(0))
    t = jnp.linspace(0.05, 0.95, x.shape[0])
    for source, target in PAIRS:
        there = dc.convert(process, out, x, t, source=source, target=target)
        back = dc.convert(process, there, x, t, source=target, target=source)
        np.testing.assert_allclose(back, out, rtol=2e-4, atol=2e-4, err_msg=f"{source}->{target}")


@pytest.mark.parametrize("name", NAMES)
def test_conversions_match_gaussian_posterior(name):
    """Data N(m, s^2): the exact score converts to the analytic posterior means and velocity."""
    process = ALL_PROCESSES[name]
    m, s = 0.8, 0.6
    x, _ = _batch(jax.random.PRNGKey(1))
    t = jnp.linspace(0.05, 0.95, x.shape[0])
    a = np.asarray(process.alpha(t), np.float64)[:, None]
    sg = np.asarray(process.sigma(t), np.float64)[:, None]
    xn = np.asarray(x, np.float64)
    var = a**2 * s**2 + sg**2
    score = -(xn - a * m) / var
    x0 = m + a * s**2 / var * (xn - a * m)
    eps = sg * (xn - a * m) / var
    f = np.asarray(process.f(t), np.float64)[:, None]
    g2 = np.asarray(process.g2(t), np.float64)[:, None]
    expected = {
        "x0": x0,
        "eps": eps,
        "v": a * eps - sg * x0,
        # The PF-ODE velocity from the SDE coefficients (Song et al. 2021, eq. 13).
        "velocity": f * xn - 0.5 * g2 * score,
    }
    score32 = jnp.asarray(score, jnp.float32)
    for target, value in expected.items():
        got = dc.convert(process, score32, x, t, source="score", target=target)
        np.testing.assert_allclose(got, value, rtol=2e-3, atol=2e-4, err_msg=target)


@pytest.mark.parametrize("name", NAMES)
def test_every_conversion_finite_at_the_ends(name):
    process = ALL_PROCESSES[name]
    x, out = _batch(jax.random.PRNGKey(2), n=3)
    for t in (0.0, 1e-5, 1.0):
        for source, target in PAIRS:
            got = dc.convert(process, out, x, t, source=source, target=target)
            assert np.all(np.isfinite(got)), f"{name} t={t} {source}->{target}"


def test_singular_ends_return_posterior_means():
    """At sigma = 0, E[eps | x_t] = 0; at alpha = 0, E[x0 | x_t] is the data mean (0 here)."""
    vp, rf = dc.VP(), dc.RectifiedFlow()
    x, out = _batch(jax.random.PRNGKey(3), n=2)
    eps = dc.convert(vp, out, x, 0.0, source="x0", target="eps")
    np.testing.assert_array_equal(eps, 0.0)
    x0 = dc.convert(rf, out, x, 1.0, source="eps", target="x0")
    np.testing.assert_array_equal(x0, 0.0)
    # The velocity of rectified flow stays exact at t = 1: u = eps - x0 = x_1 - x0_hat.
    u = dc.convert(rf, out, x, 1.0, source="x0", target="velocity")
    np.testing.assert_allclose(u, x - out, rtol=1e-6)


def test_edm_preconditioning():
    sd = 0.5
    sc = dc.edm_preconditioning(jnp.asarray([0.0, 0.5, 80.0]), sd)
    np.testing.assert_allclose(sc.c_skip, [1.0, 0.5, sd**2 / (80.0**2 + sd**2)], rtol=1e-6)
    np.testing.assert_allclose(sc.c_out[0], 0.0)
    np.testing.assert_allclose(sc.c_in * np.sqrt(np.array([0.0, 0.25, 6400.0]) + sd**2), 1.0)
    # The effective training target (x0 - c_skip y) / c_out has unit variance (EDM, eq. 123).
    s = np.array([0.5, 80.0])
    c_skip, c_out = np.asarray(sc.c_skip[1:]), np.asarray(sc.c_out[1:])
    np.testing.assert_allclose(
        ((1 - c_skip) ** 2 * sd**2 + c_skip**2 * s**2) / c_out**2, 1.0, rtol=1e-5
    )
    np.testing.assert_allclose(sc.c_noise[1], 0.25 * np.log(0.5), rtol=1e-6)


def test_edm_denoiser_with_zero_network_is_ideal_for_gaussian_data():
    """For data N(0, sd^2) the ideal denoiser is c_skip * x/alpha, i.e. F = 0."""
    sd = 0.5
    process = dc.VP()
    model = dc.edm_denoiser(lambda x, c: jnp.zeros_like(x), process, sigma_data=sd)
    gm = dc.GaussianMixture(jnp.ones(1), jnp.zeros((1, 3)), jnp.full((1, 3), sd))
    x, _ = _batch(jax.random.PRNGKey(4), n=5)
    t = jnp.linspace(0.1, 0.9, 5)
    exact_x0, _ = gm.x0_eps(process, x, t)
    np.testing.assert_allclose(model(x, t), exact_x0, rtol=1e-4, atol=1e-6)


def test_denoiser_errors():
    process = dc.VP()
    with pytest.raises(ValueError, match="prediction='noise' is not allowed"):
        dc.make_denoiser(process, lambda x, t: x, "noise")
    bad = dc.make_denoiser(process, lambda x, t: x[:, :1], "eps")
    with pytest.raises(ValueError, match="model_fn output has shape"):
        jax.jit(bad)(jnp.ones((2, 3)), jnp.full((2,), 0.5))
