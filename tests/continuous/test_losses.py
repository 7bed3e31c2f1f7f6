"""DSM losses against their analytic minima; time samplers against exact expectations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffax.continuous as dc

M, S = 0.4, 0.6  # data N(M, S^2)
GAUSS = dc.GaussianMixture(jnp.ones(1), jnp.full((1, 1), M), jnp.full((1, 1), S))


def _posterior_variance(process, space, t):
    """Var(target | x_t) for Gaussian data, the minimum of the unweighted MSE in `space`."""
    a, s = float(process.alpha(t)), float(process.sigma(t))
    da, ds = (float(v) for v in process.alpha_sigma_dt(jnp.float32(t)))
    var_x0 = S**2 * s**2 / (a**2 * S**2 + s**2)
    # Given x_t, eps = (x_t - a x0)/s is affine in x0: every target is c x0 + const.
    slope = {"x0": 1.0, "eps": -a / s, "v": -(a * a + s * s) / s, "velocity": da - ds * a / s}
    return slope[space] ** 2 * var_x0


@pytest.mark.parametrize(
    "weighting", ["eps", "x0", "v", "flow_matching", "snr", "likelihood", "edm"]
)
@pytest.mark.parametrize("name", ["vp", "rectified_flow"])
def test_dsm_loss_of_exact_model_is_the_analytic_minimum(weighting, name):
    process = {"vp": dc.VP(), "rectified_flow": dc.RectifiedFlow()}[name]
    model = GAUSS.model_fn(process, "v")
    x0 = GAUSS.sample(jax.random.PRNGKey(0), 50_000)
    space = dc.WEIGHTINGS.get(weighting)[0]
    for t in (0.1, 0.5, 0.9):
        loss = dc.dsm_loss(
            jax.random.PRNGKey(1),
            process,
            model,
            x0,
            prediction="v",
            weighting=weighting,
            t=t,
            snr_gamma=5.0,
        )
        w = float(dc.loss_weight(weighting, process, jnp.float32(t), snr_gamma=5.0))
        np.testing.assert_allclose(
            loss.mean(), w * _posterior_variance(process, space, t), rtol=0.03, err_msg=f"t={t}"
        )


def test_weights_in_closed_form():
    vp, t = dc.VP(), jnp.asarray([0.2, 0.7])
    snr = np.exp(np.asarray(vp.log_snr(t), np.float64))
    np.testing.assert_allclose(
        dc.loss_weight("snr", vp, t, snr_gamma=5.0), np.minimum(snr, 5), rtol=1e-5
    )
    np.testing.assert_allclose(
        dc.loss_weight("likelihood", vp, t), vp.g2(t) / vp.sigma(t) ** 2, rtol=1e-4
    )
    s2 = 1 / snr
    np.testing.assert_allclose(
        dc.loss_weight("edm", vp, t, sigma_data=0.5), (s2 + 0.25) / (s2 * 0.25), rtol=1e-4
    )


@pytest.mark.parametrize("sampler", ["uniform", "stratified", "antithetic", "importance"])
def test_time_samplers_estimate_the_uniform_average(sampler):
    """E[weight * h(t)] = average of h over U[t_min, 1] for h(t) = t^2."""
    t_min = 1e-3
    t, w = dc.sample_times(jax.random.PRNGKey(0), 100_000, dc.VP(), sampler=sampler, t_min=t_min)
    assert float(t.min()) >= t_min and float(t.max()) <= 1.0
    exact = (1 - t_min**3) / (3 * (1 - t_min))
    np.testing.assert_allclose(jnp.mean(w * t**2), exact, rtol=0.02)
    if sampler == "importance":
        # With the likelihood weighting the importance-weighted integrand is constant.
        prod = w * dc.loss_weight("likelihood", dc.VP(), t)
        np.testing.assert_allclose(prod, prod[0], rtol=1e-3)


def test_lognormal_times_follow_edm():
    t, w = dc.sample_times(jax.random.PRNGKey(0), 100_000, dc.EDM(), sampler="lognormal", t_min=0.0)
    log_s = np.log(np.asarray(dc.EDM().sigma(t)))
    inside = (log_s > np.log(0.0021)) & (log_s < np.log(79.9))
    # Clipping at the ends of [sigma_min, sigma_max] only touches the far tails.
    assert inside.mean() > 0.99
    np.testing.assert_allclose([log_s.mean(), log_s.std()], [-1.2, 1.2], atol=0.03)
    np.testing.assert_array_equal(w, 1.0)


def test_dsm_loss_is_differentiable_and_checks_inputs():
    vp = dc.VP()
    x0 = jnp.ones((8, 3))

    def loss(scale):
        return dc.dsm_loss(jax.random.PRNGKey(0), vp, lambda x, t: scale * x, x0).mean()

    assert np.isfinite(jax.grad(loss)(0.5))
    with pytest.raises(ValueError, match="unknown loss weighting 'p2'.*edm"):
        dc.dsm_loss(jax.random.PRNGKey(0), vp, lambda x, t: x, x0, weighting="p2")
    with pytest.raises(ValueError, match="unknown time sampler 'sobol'.*lognormal"):
        dc.dsm_loss(jax.random.PRNGKey(0), vp, lambda x, t: x, x0, time_sampler="sobol")
    with pytest.raises(ValueError, match="model_fn output has shape"):
        dc.dsm_loss(jax.random.PRNGKey(0), vp, lambda x, t: x[:, :1], x0)
