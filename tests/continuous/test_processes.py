"""Processes: SDE coefficients against the marginal variance, closed forms, edges, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffax.continuous as dc
from diffax.core import pytree_dataclass

from .conftest import ALL_PROCESSES

NAMES = sorted(ALL_PROCESSES)


def _end(name):
    # f and g are infinite at t = 1 when alpha(1) = 0; integrate up to sde_t_max there.
    return ALL_PROCESSES[name].sde_t_max


@pytest.mark.parametrize("name", NAMES)
def test_lyapunov_ode_reproduces_marginal_variance(name):
    """dVar/dt = 2 f Var + g^2 integrated numerically equals alpha^2 Var0 + sigma^2."""
    process = ALL_PROCESSES[name]
    var0, n = 0.7, 4000
    t_end = _end(name)
    grid = np.linspace(0.0, t_end, 2 * n + 1)  # RK4 needs the half steps
    f = np.asarray(process.f(jnp.asarray(grid, jnp.float32)), np.float64)
    g2 = np.asarray(process.g2(jnp.asarray(grid, jnp.float32)), np.float64)
    a0, s0 = float(process.alpha(0.0)), float(process.sigma(0.0))
    var = a0**2 * var0 + s0**2
    h = grid[2] - grid[0]
    rhs = lambda i, v: 2.0 * f[i] * v + g2[i]
    checkpoints = {}
    for k in range(n):
        i = 2 * k
        k1 = rhs(i, var)
        k2 = rhs(i + 1, var + 0.5 * h * k1)
        k3 = rhs(i + 1, var + 0.5 * h * k2)
        k4 = rhs(i + 2, var + h * k3)
        var += h / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
        if (k + 1) % (n // 4) == 0:
            checkpoints[grid[i + 2]] = var
    for t, v in checkpoints.items():
        a, s = float(process.alpha(t)), float(process.sigma(t))
        np.testing.assert_allclose(v, a * a * var0 + s * s, rtol=2e-4, err_msg=f"{name} t={t}")


def test_closed_forms():
    t = jnp.linspace(0.0, 1.0, 11)
    vp, sub = dc.VP(), dc.SubVP()
    b = 0.1 * t + 0.5 * 19.9 * t**2
    np.testing.assert_allclose(vp.alpha(t), np.exp(-0.5 * b), rtol=1e-6)
    np.testing.assert_allclose(vp.alpha(t) ** 2 + vp.sigma(t) ** 2, 1.0, rtol=1e-6)
    np.testing.assert_allclose(sub.sigma(t), 1.0 - np.exp(-b), rtol=1e-5, atol=1e-7)
    ve = dc.VE(sigma_min=0.01, sigma_max=50.0)
    np.testing.assert_allclose(ve.sigma(t), 0.01 * 5000.0**t, rtol=1e-5)
    edm = dc.EDM(sigma_min=0.002, sigma_max=80.0)
    np.testing.assert_allclose(edm.sigma(t), 0.002 + t * 79.998, rtol=1e-6)
    rf = dc.RectifiedFlow()
    np.testing.assert_allclose(rf.alpha(t), 1 - t, atol=1e-7)
    np.testing.assert_allclose(rf.sigma(t), t)
    cos = dc.Cosine()
    np.testing.assert_allclose(cos.alpha(t), np.cos(np.pi * t / 2), atol=1e-7)
    np.testing.assert_allclose(cos.sigma(t), np.sin(np.pi * t / 2), atol=1e-7)
    vc = dc.VP(schedule="cosine")
    phi = lambda u: (u * 0.9946 + 0.008) / 1.008 * np.pi / 2
    np.testing.assert_allclose(vc.alpha(t), np.cos(phi(t)) / np.cos(phi(0.0)), rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_log_snr_and_its_inverse(name):
    process = ALL_PROCESSES[name]
    t = jnp.linspace(0.02, 0.98, 25)
    lam = process.log_snr(t)
    expected = 2 * np.log(np.asarray(process.alpha(t), np.float64) / np.asarray(process.sigma(t)))
    np.testing.assert_allclose(lam, expected, rtol=1e-5, atol=1e-5)
    assert np.all(np.diff(np.asarray(lam)) < 0)
    np.testing.assert_allclose(process.t_from_log_snr(lam), t, atol=2e-5)
    # g^2 = -sigma^2 dlogSNR/dt against a central difference of logSNR (float64 by hand).
    dt = 1e-3
    fd = (np.asarray(process.log_snr(t + dt), np.float64) - np.asarray(process.log_snr(t - dt))) / (
        2 * dt
    )
    np.testing.assert_allclose(process.dlog_snr_dt(t), fd, rtol=3e-3)


@pytest.mark.parametrize("name", NAMES)
def test_finite_at_the_ends_in_float32(name):
    process = ALL_PROCESSES[name]
    t = jnp.asarray([0.0, 1e-5, 1.0 - 1e-5, 1.0], jnp.float32)
    for method in ("alpha", "sigma", "log_snr", "f", "g", "g2", "dlog_snr_dt"):
        out = getattr(process, method)(t)
        assert out.dtype == jnp.float32, method
        assert np.all(np.isfinite(out)), f"{name}.{method}: {out}"
    assert np.all(np.isfinite(np.asarray(process.alpha_sigma_dt(t))))
    x0 = jnp.ones((4, 3))
    xt, eps = process.marginal_sample(jax.random.PRNGKey(0), x0, t)
    assert np.all(np.isfinite(xt)) and np.all(np.isfinite(eps))
    prior = process.prior_sample(jax.random.PRNGKey(1), (4, 3))
    assert np.all(np.isfinite(process.prior_log_prob(prior)))
    lam = jnp.asarray([-dc.processes.LOG_SNR_BOUND, 0.0, dc.processes.LOG_SNR_BOUND])
    assert np.all(np.isfinite(process.t_from_log_snr(lam)))


def test_marginal_and_prior_sampling_moments():
    process = dc.VP()
    x0 = jnp.full((20000, 2), 1.5)
    t = 0.3
    xt, _ = process.marginal_sample(jax.random.PRNGKey(0), x0, t)
    np.testing.assert_allclose(xt.mean(), 1.5 * float(process.alpha(t)), atol=0.02)
    np.testing.assert_allclose(xt.std(), float(process.sigma(t)), rtol=0.02)
    ve = dc.VE()
    z = ve.prior_sample(jax.random.PRNGKey(1), (20000, 2))
    np.testing.assert_allclose(z.std(), 50.0, rtol=0.02)
    # The prior log-density is that of N(0, sigma(1)^2 I).
    x = jnp.asarray([[0.0, 0.0], [3.0, -4.0]])
    expected = -0.5 * np.array([0.0, 25.0]) / 2500.0 - 2 * np.log(50.0 * np.sqrt(2 * np.pi))
    np.testing.assert_allclose(ve.prior_log_prob(x), expected, rtol=1e-5)


def test_processes_are_pytrees_under_jit():
    @jax.jit
    def sig(process, t):
        return process.sigma(t)

    np.testing.assert_allclose(sig(dc.VP(beta_max=10.0), 0.5), dc.VP(beta_max=10.0).sigma(0.5))
    # The schedule object is a child node: its numbers are the only leaves.
    assert jax.tree_util.tree_leaves(dc.VP()) == [0.1, 20.0]


def test_bad_arguments():
    with pytest.raises(ValueError, match="t must lie in"):
        dc.VP().alpha(1.5)
    with pytest.raises(ValueError, match="t must lie in"):
        dc.RectifiedFlow().sigma(jnp.asarray([-0.1, 0.5]))
    with pytest.raises(ValueError, match="schedule"):
        dc.VP(schedule="quadratic")
    with pytest.raises(ValueError, match="sigma_min must be > 0"):
        dc.VE(sigma_min=0.0)


INF, NAN = float("inf"), float("nan")


@pytest.mark.parametrize(
    "make, argument",
    [
        (lambda: dc.VE(sigma_min=50.0, sigma_max=0.01), "sigma_min"),
        (lambda: dc.VE(sigma_min=1.0, sigma_max=1.0), "sigma_min"),
        (lambda: dc.VE(sigma_max=INF), "sigma_max"),
        (lambda: dc.VE(sigma_min=NAN), "sigma_min"),
        (lambda: dc.VP(cosine_t_max=1.5), "cosine_t_max"),
        (lambda: dc.VP(schedule="cosine", cosine_t_max=1.0), "cosine_t_max"),
        (lambda: dc.VP(schedule="cosine", cosine_t_max=0.0), "cosine_t_max"),
        (lambda: dc.VP(cosine_s=INF), "cosine_s"),
        (lambda: dc.VP(beta_max=INF), "beta_max"),
        (lambda: dc.VP(beta_min=NAN), "beta_min"),
        (lambda: dc.VP(beta_min=30.0, beta_max=20.0), "beta_min"),
        (lambda: dc.SubVP(beta_min=5.0, beta_max=1.0), "beta_min"),
        (lambda: dc.SubVP(beta_max=INF), "beta_max"),
        (lambda: dc.EDM(sigma_min=1.0, sigma_max=0.5), "sigma_min"),
        (lambda: dc.EDM(sigma_max=NAN), "sigma_max"),
        (lambda: dc.EDM(sigma_min=-1.0), "sigma_min"),
    ],
)
def test_constructors_refuse_nonsense(make, argument):
    """Unordered, infinite, NaN or out-of-range parameters raise a ValueError naming the argument
    and its allowed range (VP(cosine_t_max=1.5) used to give alpha(1) = NaN)."""
    with pytest.raises(ValueError, match=argument) as err:
        make()
    assert "must" in str(err.value)


def test_validated_processes_still_pass_through_jit_and_vmap():
    """Unflattening rebuilds processes from tracers and arrays: those are not checked."""
    stacked = jax.tree_util.tree_map(
        lambda *v: jnp.stack([jnp.asarray(x, jnp.float32) for x in v]),
        dc.VE(0.01, 50.0),
        dc.VE(0.02, 40.0),
    )
    sig = jax.vmap(lambda p: p.sigma(1.0))(stacked)
    np.testing.assert_allclose(sig, [50.0, 40.0], rtol=1e-5)
    for process in ALL_PROCESSES.values():
        out = jax.jit(lambda p, t: p.sigma(t))(process, 0.5)
        np.testing.assert_allclose(out, process.sigma(0.5), rtol=1e-6)
    grads = jax.grad(lambda p: p.sigma(0.5))(dc.EDM())
    assert np.isfinite(grads.sigma_max)


def test_vp_cosine_is_accurate_near_t0():
    """alpha = cos(phi(t)) / cos(phi(0)) lost all digits of 1 - alpha^2 for t < ~1e-5 in float32
    (sigma(1e-6) was 0), which made the PF-ODE velocity and flow-matching loss infinite there."""
    vc = dc.VP(schedule="cosine")
    t = np.array([1e-9, 1e-7, 1e-6, 1e-4, 1e-2], np.float64)
    phi = lambda u: (u * 0.9946 + 0.008) / 1.008 * np.pi / 2
    alpha = np.cos(phi(t)) / np.cos(phi(0.0))
    sigma = np.sqrt(1.0 - alpha**2)
    np.testing.assert_allclose(vc.sigma(jnp.asarray(t, jnp.float32)), sigma, rtol=1e-4)
    np.testing.assert_allclose(vc.log_alpha(jnp.asarray(t, jnp.float32)), np.log(alpha), rtol=1e-4)


# -- VP schedules as objects ------------------------------------------------------------------

TRANSFORMS = [pytest.param(lambda f: f, id="eager"), pytest.param(jax.jit, id="jit")]
VP_METHODS = ("alpha", "sigma", "log_alpha", "log_snr", "f", "g2", "dlog_snr_dt", "t_from_log_snr")


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_vp_schedule_object_equals_keyword_form(transform):
    """VP(schedule=LinearBeta(a, b)) is VP(beta_min=a, beta_max=b), bit for bit; same for the
    cosine schedule and its name."""
    t = jnp.linspace(0.0, 1.0, 13)
    pairs = [
        (dc.VP(schedule=dc.processes.LinearBeta(0.2, 12.0)), dc.VP(beta_min=0.2, beta_max=12.0)),
        (dc.VP(schedule=dc.processes.LinearBeta()), dc.VP(schedule="linear")),
        (
            dc.VP(schedule=dc.processes.CosineSchedule(s=0.01, t_max=0.99)),
            dc.VP(schedule="cosine", cosine_s=0.01, cosine_t_max=0.99),
        ),
        (dc.SubVP(schedule=dc.processes.LinearBeta(0.2, 12.0)), dc.SubVP(0.2, 12.0)),
    ]
    for with_object, with_keywords in pairs:
        assert with_object == with_keywords
        for method in VP_METHODS:
            arg = -t * 10 + 5 if method == "t_from_log_snr" else t
            run = transform(lambda p, u, m=method: getattr(p, m)(u))
            np.testing.assert_array_equal(run(with_object, arg), run(with_keywords, arg))


@pytree_dataclass
class ConstantBeta(dc.processes.VPSchedule):
    """A user schedule that defines log alpha only: beta(t) = b, alpha = exp(-b t / 2)."""

    b: float = 3.0

    def log_alpha(self, t):
        return -0.5 * self.b * t


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_user_schedule_plugs_into_vp(transform):
    """beta (autodiff), f, g^2 and t_from_log_snr (bisection) of a user schedule against the
    closed forms alpha = exp(-b t / 2), f = -b / 2, g^2 = b, logSNR = -log(exp(b t) - 1)."""
    vp = dc.VP(schedule=ConstantBeta(3.0))
    t = jnp.linspace(0.05, 1.0, 9)
    alpha = np.exp(-1.5 * np.asarray(t, np.float64))
    call = lambda m, u: transform(lambda p, x: getattr(p, m)(x))(vp, u)
    np.testing.assert_allclose(call("alpha", t), alpha, rtol=1e-6)
    np.testing.assert_allclose(call("sigma", t), np.sqrt(1 - alpha**2), rtol=1e-6)
    np.testing.assert_allclose(call("f", t), -1.5, rtol=1e-6)
    np.testing.assert_allclose(call("g2", t), 3.0, rtol=1e-6)
    lam = -np.log(np.expm1(3.0 * np.asarray(t, np.float64)))
    np.testing.assert_allclose(call("log_snr", t), lam, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(call("t_from_log_snr", jnp.asarray(lam, jnp.float32)), t, atol=1e-5)
    out = jax.jit(lambda p: p.alpha(0.5))(vp)  # the schedule travels through jit as a pytree
    np.testing.assert_allclose(out, np.exp(-0.75), rtol=1e-6)


def test_schedule_names_and_keywords_are_checked():
    with pytest.raises(ValueError, match="unknown VP schedule 'quadratic'.*cosine, linear"):
        dc.VP(schedule="quadratic")
    with pytest.raises(ValueError, match="cosine_s.*must come with schedule='cosine'"):
        dc.VP(cosine_s=0.01)
    with pytest.raises(ValueError, match="beta_min.*must come with schedule='linear'"):
        dc.VP(0.1, 20.0, schedule="cosine")
    with pytest.raises(ValueError, match="must not be given with a schedule object"):
        dc.VP(beta_min=0.2, schedule=dc.processes.LinearBeta())
    with pytest.raises(TypeError, match="schedule must be a VP schedule object"):
        dc.VP(schedule=object())
    assert dc.processes.SCHEDULES.get("cosine") is dc.processes.CosineSchedule
