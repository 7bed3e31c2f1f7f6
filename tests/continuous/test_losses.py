"""DSM losses against their analytic minima; time samplers against exact expectations."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffax.continuous as dc
from diffax.core import UnknownOptionError

from .conftest import ALL_PROCESSES

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
    space = dc.WEIGHTINGS.get(weighting)().space
    options = {"snr_gamma": 5.0} if weighting == "snr" else {}
    for t in (0.1, 0.5, 0.9):
        loss = dc.dsm_loss(
            jax.random.PRNGKey(1),
            process,
            model,
            x0,
            prediction="v",
            weighting=weighting,
            t=t,
            **options,
        )
        w = float(dc.loss_weight(weighting, process, jnp.float32(t), **options))
        np.testing.assert_allclose(
            loss.mean(), w * _posterior_variance(process, space, t), rtol=0.03, err_msg=f"t={t}"
        )


TRANSFORMS = [pytest.param(lambda f: f, id="eager"), pytest.param(jax.jit, id="jit")]


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_weights_in_closed_form(transform):
    vp, t = dc.VP(), jnp.asarray([0.2, 0.7])
    weight = lambda name, **options: transform(lambda u: dc.loss_weight(name, vp, u, **options))(t)
    snr = np.exp(np.asarray(vp.log_snr(t), np.float64))
    np.testing.assert_allclose(weight("snr", snr_gamma=5.0), np.minimum(snr, 5), rtol=1e-5)
    np.testing.assert_allclose(weight("likelihood"), vp.g2(t) / vp.sigma(t) ** 2, rtol=1e-4)
    s2 = 1 / snr
    np.testing.assert_allclose(weight("edm", sigma_data=0.5), (s2 + 0.25) / (s2 * 0.25), rtol=1e-4)


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


# -- exact endpoints, argument checks --------------------------------------------------------

PREDICTIONS = ("eps", "x0", "v", "score", "velocity")
WEIGHTINGS = ("eps", "x0", "v", "flow_matching", "snr", "likelihood", "edm")
SIGMA0 = {"vp", "vp_cosine", "subvp", "rectified_flow", "cosine"}  # sigma(0) = 0
ALPHA1 = {"rectified_flow", "cosine"}  # alpha(1) = 0
DSIGMA0 = {"vp", "vp_cosine"}  # sigma(t) ~ sqrt(t): d sigma / dt = inf at t = 0
X0 = jax.random.normal(jax.random.PRNGKey(7), (6, 2)) + 0.3
T_NEAR = {0.0: 1e-10, 1.0: 1.0 - 2.0**-24}
NAN = float("nan")


def _dsm(process, weighting, prediction, t, scale=0.7, **options):
    """Mean dsm_loss and its gradient w.r.t. an affine model `scale * x_t + 0.2 + t`."""

    def mean_loss(scale):
        model = lambda x, tt: scale * x + 0.2 + tt[:, None]
        return dc.dsm_loss(
            jax.random.PRNGKey(3),
            process,
            model,
            X0,
            prediction=prediction,
            weighting=weighting,
            t=t,
            **options,
        ).mean()

    value, grad = jax.value_and_grad(mean_loss)(scale)
    return float(value), float(grad)


def _loss_refused(name, weighting, prediction, t):
    """Where w(t) |target_hat - target|^2 has no finite limit for a generic model.

    sigma = 0: eps cannot be recovered from an x0 prediction (eps = (x_t - alpha x0_hat) / sigma),
    so every weighting that sees eps (all but x0, and snr with a finite cap) is infinite; the
    likelihood weight g^2 / sigma^2 is infinite; the velocity is infinite where sigma ~ sqrt(t).
    alpha = 0: x0 cannot be recovered from an eps (or score) prediction, so weightings that see
    x0 are infinite; snr (SNR |x0_hat - x0|^2 = |eps_hat - eps|^2) and eps are not.
    """
    s0 = t == 0.0 and name in SIGMA0
    a0 = t == 1.0 and name in ALPHA1
    ds0 = t == 0.0 and name in DSIGMA0
    eps_like = prediction in ("eps", "score")
    if weighting == "likelihood":
        return s0 or (a0 and eps_like)
    if weighting == "flow_matching":
        return ds0 or (s0 and prediction == "x0") or (a0 and eps_like)
    if weighting == "x0":
        return a0 and eps_like
    if weighting in ("v", "edm"):
        return (s0 and prediction == "x0") or (a0 and eps_like)
    return s0 and prediction == "x0"  # eps, snr (uncapped)


GRID = [
    (name, weighting, prediction, t)
    for name in sorted(ALL_PROCESSES)
    for weighting in WEIGHTINGS
    for prediction in PREDICTIONS
    for t in (0.0, 1.0)
]


@pytest.mark.slow
@pytest.mark.parametrize("name, weighting, prediction, t", GRID)
def test_dsm_loss_at_exact_endpoints(name, weighting, prediction, t):
    """Every process x weighting x prediction at t = 0 and 1: the finite limit (value and gradient
    equal those at a time 1e-10 / 6e-8 away), or a ValueError naming t where it is infinite."""
    process = ALL_PROCESSES[name]
    if _loss_refused(name, weighting, prediction, t):
        with pytest.raises(ValueError, match=r"t must lie in"):
            _dsm(process, weighting, prediction, t)
        return
    value, grad = _dsm(process, weighting, prediction, t)
    assert np.isfinite(value) and np.isfinite(grad), (value, grad)
    near_value, near_grad = _dsm(process, weighting, prediction, T_NEAR[t])
    # VP-type paths approach t = 0 like sigma ~ sqrt(t) ~ 1e-5 here.
    np.testing.assert_allclose(value, near_value, rtol=2e-3, atol=2e-4)
    np.testing.assert_allclose(grad, near_grad, rtol=2e-3, atol=2e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ALL_PROCESSES))
@pytest.mark.parametrize("weighting", WEIGHTINGS)
def test_loss_weights_at_exact_endpoints(name, weighting):
    """w(t) is its finite limit at t = 0 and 1 (value and d/dt), or refused where infinite:
    SNR = alpha^2 / sigma^2 and g^2 / sigma^2 at sigma = 0, -dlogSNR/dt at alpha = 0."""
    process = ALL_PROCESSES[name]
    for t in (0.0, 1.0):
        s0, a0 = t == 0.0 and name in SIGMA0, t == 1.0 and name in ALPHA1
        refused = {"snr": s0, "edm": s0, "likelihood": s0 or a0}.get(weighting, False)
        if refused:
            with pytest.raises(ValueError, match="t must lie in"):
                dc.loss_weight(weighting, process, jnp.float32(t))
            continue
        value = float(dc.loss_weight(weighting, process, jnp.float32(t)))
        near = float(dc.loss_weight(weighting, process, jnp.float32(T_NEAR[t])))
        assert np.isfinite(value)
        np.testing.assert_allclose(value, near, rtol=1e-3, atol=1e-6)
        dw = jax.grad(lambda u: dc.loss_weight(weighting, process, u))(jnp.float32(t))
        assert np.isfinite(dw)


def test_snr_weighting_vp_at_t0():
    """VP + snr at t = 0 was NaN (SNR = inf times a zero x0 error). With an eps model,
    SNR |x0_hat - x0|^2 = |eps_hat - eps|^2 exactly (x0_hat - x0 = -sigma/alpha (eps_hat - eps)),
    so the value is the eps-weighted loss; its gradient is finite and that of t = 1e-10."""
    vp = dc.VP()
    value, grad = _dsm(vp, "snr", "eps", 0.0)
    eps_value, eps_grad = _dsm(vp, "eps", "eps", 0.0)
    np.testing.assert_allclose([value, grad], [eps_value, eps_grad], rtol=1e-6)
    near_value, near_grad = _dsm(vp, "snr", "eps", 1e-10)
    np.testing.assert_allclose([value, grad], [near_value, near_grad], rtol=1e-3)
    # With a finite cap, min(SNR, gamma) = gamma at t = 0 and eps_hat plays no part.
    capped, capped_grad = _dsm(vp, "snr", "eps", 0.0, snr_gamma=5.0)
    assert capped == 0.0 and capped_grad == 0.0


def test_edm_weighting_rectified_flow_at_t1():
    """RectifiedFlow + edm at t = 1 was NaN. alpha = 0, sigma = 1: w = 1/s_d^2 + SNR = 1/s_d^2 and
    x_t = eps. An x0 model c gives w |c - x0|^2; a v model (v = alpha eps - sigma x0 = -x0) gives
    the same weight on |v_hat + x0|^2. An eps model cannot recover x0 there: refused."""
    rf = dc.RectifiedFlow()
    np.testing.assert_allclose(dc.loss_weight("edm", rf, 1.0, sigma_data=0.5), 4.0, rtol=1e-6)
    c = jnp.asarray([0.3, -0.2])
    const = lambda x, t: jnp.broadcast_to(c, x.shape)
    for prediction, target in (("x0", X0), ("v", -X0)):
        loss = dc.dsm_loss(
            jax.random.PRNGKey(0), rf, const, X0, prediction=prediction, weighting="edm", t=1.0
        )
        expected = 4.0 * np.mean(np.square(np.asarray(c) - np.asarray(target)), axis=-1)
        np.testing.assert_allclose(loss, expected, rtol=1e-5)
    with pytest.raises(ValueError, match="t must lie in"):
        dc.dsm_loss(jax.random.PRNGKey(0), rf, const, X0, prediction="eps", weighting="edm", t=1.0)


def test_time_bounds_are_checked():
    vp, key, model = dc.VP(), jax.random.PRNGKey(0), lambda x, t: x
    for t_min, t_max in ((0.5, 0.2), (0.5, 0.5), (-0.1, 0.5), (0.1, 1.5)):
        with pytest.raises(ValueError, match="t_min|t_max"):
            dc.sample_times(key, 4, vp, t_min=t_min, t_max=t_max)
        with pytest.raises(ValueError, match="t_min|t_max"):
            dc.dsm_loss(key, vp, model, X0, t_min=t_min, t_max=t_max)
    for t_min in (1.0, 1.5, -0.5):
        with pytest.raises(ValueError, match="t_min"):
            dc.elbo_terms(key, vp, model, X0, t_min=t_min)
    # sigma(0) = 0: the reconstruction term log(sigma/alpha) is -inf and the diffusion term +inf.
    with pytest.raises(ValueError, match="t_min"):
        dc.elbo_terms(key, vp, model, X0, t_min=0.0)
    terms = dc.elbo_terms(key, dc.VE(), model, X0, t_min=0.0)  # sigma(0) = sigma_min > 0
    assert np.all(np.isfinite(terms.total))
    for option in ({"snr_gamma": 0.0}, {"snr_gamma": NAN}):
        with pytest.raises(ValueError, match="snr_gamma"):
            dc.dsm_loss(key, vp, model, X0, weighting="snr", **option)
    with pytest.raises(ValueError, match="sigma_data"):
        dc.dsm_loss(key, vp, model, X0, weighting="edm", sigma_data=-1.0)


def test_losses_need_a_batch_axis():
    vp, key, model = dc.VP(), jax.random.PRNGKey(0), lambda x, t: x
    with pytest.raises(ValueError, match=r"x0 has shape \(6,\); expected \[B, \.\.\.\]"):
        dc.dsm_loss(key, vp, model, X0[:, 0])
    with pytest.raises(ValueError, match=r"y has shape \(6,\); expected \[B, \.\.\.\]"):
        dc.elbo_terms(key, vp, model, X0[:, 0])


# -- factories, names and strict options -------------------------------------------------------


def test_unknown_and_unused_options_are_errors():
    """`sigmadata=0.01` used to give the default edm loss silently; options that the chosen
    weighting or time sampler does not take are errors too."""
    vp, key, model = dc.VP(), jax.random.PRNGKey(0), lambda x, t: x
    with pytest.raises(UnknownOptionError, match="'sigmadata'.*allowed options: sigma_data"):
        dc.dsm_loss(key, vp, model, X0, weighting="edm", sigmadata=0.01)
    with pytest.raises(UnknownOptionError, match="'sigma_data'.*takes no options"):
        dc.dsm_loss(key, vp, model, X0, weighting="eps", sigma_data=0.5)
    with pytest.raises(UnknownOptionError, match="'p_mean'.*allowed options: snr_gamma"):
        dc.dsm_loss(key, vp, model, X0, weighting="snr", time_sampler="uniform", p_mean=0.0)
    with pytest.raises(UnknownOptionError, match="'snr_gamma'.*allowed options: sigma_data"):
        dc.loss_weight("edm", vp, 0.5, snr_gamma=5.0)
    with pytest.raises(UnknownOptionError, match="'p_std'.*takes no options"):
        dc.sample_times(key, 4, vp, sampler="uniform", p_std=1.0)
    with pytest.raises(UnknownOptionError, match="'sigma_data'.*an object binds its own"):
        dc.dsm_loss(key, vp, model, X0, weighting=dc.weightings.edm(), sigma_data=0.3)
    with pytest.raises(TypeError, match="weighting must be a Weighting"):
        dc.loss_weight(lambda p, t: t, vp, 0.5)
    with pytest.raises(ValueError, match="p_std=-1.0.*std must"):
        dc.sample_times(key, 4, vp, sampler="lognormal", p_std=-1.0)


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_factory_objects_equal_their_names(transform):
    vp, key = dc.VP(), jax.random.PRNGKey(2)
    model = lambda x, t: 0.5 * x + t[:, None]
    t = jnp.asarray([0.2, 0.7])
    lognormal = dc.time_samplers.lognormal(mean=-1.0, std=0.5)
    cases = [
        (dc.weightings.edm(sigma_data=0.3), "edm", {"sigma_data": 0.3}),
        (dc.weightings.snr(gamma=5.0), "snr", {"snr_gamma": 5.0}),
        (dc.weightings.likelihood(), "likelihood", {}),
        (dc.weightings.flow_matching(), "flow_matching", {}),
    ]
    for obj, name, options in cases:
        by_object = transform(lambda u, w=obj: dc.loss_weight(w, vp, u))(t)
        by_name = transform(lambda u, n=name, o=options: dc.loss_weight(n, vp, u, **o))(t)
        np.testing.assert_array_equal(by_object, by_name)
        loss_object = transform(
            lambda k, w=obj: dc.dsm_loss(k, vp, model, X0, weighting=w, time_sampler=lognormal)
        )(key)
        loss_name = transform(
            lambda k, n=name, o=options: dc.dsm_loss(
                k, vp, model, X0, weighting=n, time_sampler="lognormal", p_mean=-1.0, p_std=0.5, **o
            )
        )(key)
        chex.assert_shape(loss_object, (X0.shape[0],))
        np.testing.assert_array_equal(loss_object, loss_name)


def test_stratified_and_antithetic_times():
    """ "stratified": (u + i)/B with one shared u; "antithetic": pairs (u, 1 - u)."""
    key, vp, b = jax.random.PRNGKey(3), dc.VP(), 8
    t, w = dc.sample_times(key, b, vp, sampler=dc.time_samplers.stratified(), t_min=0.0)
    chex.assert_shape([t, w], (b,))
    offsets = np.asarray(t, np.float64) * b - np.arange(b)
    assert np.all((offsets >= 0) & (offsets < 1))
    np.testing.assert_allclose(offsets, offsets[0], atol=1e-5)
    t, _ = dc.sample_times(key, b, vp, sampler="antithetic", t_min=0.0)
    np.testing.assert_allclose(t[: b // 2] + t[b // 2 :], 1.0, atol=1e-6)


def test_user_weighting_and_time_sampler_plug_in():
    """A user `Weighting` (w = 2 in eps space) is twice the eps loss; a user `TimeSampler` that
    always draws t = 0.3 is the loss at fixed t = 0.3."""
    vp, key = dc.VP(), jax.random.PRNGKey(4)
    model = lambda x, t: 0.5 * x + t[:, None]
    double = dc.Weighting(space="eps", weight=lambda process, t: jnp.full_like(t, 2.0))
    fixed = dc.TimeSampler(lambda k, b, p, lo, hi: (jnp.full((b,), 0.3), jnp.ones((b,))))
    loss = dc.dsm_loss(key, vp, model, X0, weighting=double, time_sampler=fixed)
    eps_loss = dc.dsm_loss(key, vp, model, X0, weighting="eps", t=0.3)
    np.testing.assert_allclose(loss, 2.0 * eps_loss, rtol=1e-6)
