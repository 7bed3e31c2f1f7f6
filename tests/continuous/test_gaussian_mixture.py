"""The mixture oracle itself: score = grad log p_t, posterior means consistent, moments."""

import jax
import jax.numpy as jnp
import numpy as np

import diffax.continuous as dc

from .conftest import ALL_PROCESSES


def test_score_is_gradient_of_marginal_log_prob(ring_mixture):
    x = jax.random.normal(jax.random.PRNGKey(0), (5, 2)) * 2.0
    for process in ALL_PROCESSES.values():
        t = jnp.linspace(0.05, 0.95, 5)
        grad = jax.grad(lambda x: ring_mixture.marginal_log_prob(process, x, t).sum())(x)
        np.testing.assert_allclose(ring_mixture.score(process, x, t), grad, rtol=1e-4, atol=1e-5)
        x0, eps = ring_mixture.x0_eps(process, x, t)
        a, s = process.alpha(t)[:, None], process.sigma(t)[:, None]
        np.testing.assert_allclose(a * x0 + s * eps, x, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(eps, -s * grad, rtol=1e-4, atol=1e-5)


def test_marginal_at_zero_is_data_density(ring_mixture):
    x = jax.random.normal(jax.random.PRNGKey(1), (7, 2))
    np.testing.assert_allclose(
        ring_mixture.marginal_log_prob(dc.VP(), x, 0.0), ring_mixture.log_prob(x), rtol=1e-6
    )


def test_sample_moments(ring_mixture):
    x = ring_mixture.sample(jax.random.PRNGKey(2), 40000)
    np.testing.assert_allclose(x.mean(0), ring_mixture.mean(), atol=0.03)
    np.testing.assert_allclose(np.cov(np.asarray(x).T), ring_mixture.covariance(), atol=0.05)
    np.testing.assert_allclose(ring_mixture.covariance(), np.eye(2) * (0.09 + 2.0), atol=1e-6)


def test_sliced_wasserstein_of_a_shift():
    """Shifting a set by delta moves every projection by theta.delta: SW = |delta| / sqrt(D)."""
    x = jax.random.normal(jax.random.PRNGKey(3), (500, 4))
    delta = jnp.asarray([0.3, -0.2, 0.1, 0.4])
    sw = dc.sliced_wasserstein(jax.random.PRNGKey(4), x, x + delta, num_projections=4096)
    np.testing.assert_allclose(sw, np.linalg.norm(delta) / 2.0, rtol=0.03)
    assert float(dc.sliced_wasserstein(jax.random.PRNGKey(4), x, x)) == 0.0
