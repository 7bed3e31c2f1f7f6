"""Schedules: closed-form derivatives against autodiff, identities, inverse, endpoints."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffax.discrete as dd

SCHEDULES = [
    dd.LinearSchedule(),
    dd.CosineSchedule(),
    dd.LogLinearSchedule(1e-3),
    dd.GeometricSchedule(1e-4, 20.0),
    dd.PolynomialSchedule(2.0),
    dd.PolynomialSchedule(0.5),
]
T = jnp.array([0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99], jnp.float32)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: repr(s))
def test_closed_forms_match_autodiff(schedule):
    grad = jax.vmap(jax.grad(lambda t: schedule.alpha(t)))
    np.testing.assert_allclose(schedule.dalpha(T), grad(T), rtol=2e-5, atol=1e-6)
    noise_grad = jax.vmap(jax.grad(lambda t: schedule.total_noise(t)))
    np.testing.assert_allclose(schedule.rate(T), noise_grad(T), rtol=1e-4)
    np.testing.assert_allclose(
        schedule.total_noise(T), -np.log(schedule.alpha(T)), rtol=1e-5, atol=1e-7
    )
    np.testing.assert_allclose(schedule.one_minus_alpha(T), 1 - schedule.alpha(T), atol=1e-6)
    np.testing.assert_allclose(
        schedule.masking_rate(T), -schedule.dalpha(T) / schedule.one_minus_alpha(T), rtol=1e-5
    )
    np.testing.assert_allclose(schedule.inverse_alpha(schedule.alpha(T)), T, atol=2e-4)
    assert np.all(np.diff(np.asarray(schedule.alpha(T))) < 0)


def test_endpoints_and_linear_default():
    lin = dd.LinearSchedule()
    np.testing.assert_allclose(lin.alpha(T), 1 - T)
    for s in (lin, dd.CosineSchedule(), dd.PolynomialSchedule(3.0)):
        assert s.alpha_at(0.0) == 1.0 and s.alpha_at(1.0) == pytest.approx(0.0, abs=1e-7)
    assert dd.LogLinearSchedule(1e-3).alpha_at(1.0) == pytest.approx(1e-3, rel=1e-4)
    geo = dd.GeometricSchedule(1e-4, 20.0)
    assert geo.alpha_at(0.0) == pytest.approx(np.exp(-1e-4))
    assert geo.alpha_at(1.0) == pytest.approx(np.exp(-20.0), rel=1e-3)
    assert float(dd.CosineSchedule().rate(1.0)) == np.inf
    assert float(dd.CosineSchedule().masking_rate(1.0)) == pytest.approx(0.0, abs=1e-6)


def test_registry_and_bad_parameters():
    assert dd.schedules.names() == ["cosine", "geometric", "linear", "loglinear", "polynomial"]
    assert dd.schedules.get("linear") is dd.LinearSchedule
    assert dd.SCHEDULES is dd.schedules
    with pytest.raises(ValueError, match="allowed values"):
        dd.schedules.get("quadratic")
    with pytest.raises(ValueError, match="sigma_min"):
        dd.GeometricSchedule(1.0, 0.5)
    with pytest.raises(ValueError, match="power"):
        dd.PolynomialSchedule(0.0)
    with pytest.raises(ValueError, match="eps"):
        dd.LogLinearSchedule(1.5)


def test_schedules_are_static_under_jit():
    process = dd.Masked(4, dd.CosineSchedule())
    fn = jax.jit(lambda p, t: p.alpha(t))
    np.testing.assert_allclose(fn(process, 0.5), process.alpha(0.5))
    assert hash(dd.PolynomialSchedule(2.0)) == hash(dd.PolynomialSchedule(2.0))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: dd.GeometricSchedule(sigma_max=float("inf")), "sigma_max"),
        (lambda: dd.GeometricSchedule(sigma_min=float("nan")), "sigma_min"),
        (lambda: dd.GeometricSchedule(sigma_min=1e-50, sigma_max=1.0), "sigma_min"),
        (lambda: dd.GeometricSchedule(sigma_min=-1.0), "sigma_min"),
        (lambda: dd.PolynomialSchedule(power=float("inf")), "power"),
        (lambda: dd.PolynomialSchedule(power=float("nan")), "power"),
        (lambda: dd.PolynomialSchedule(power=-2.0), "power"),
        (lambda: dd.LogLinearSchedule(eps=float("nan")), "eps"),
        (lambda: dd.LogLinearSchedule(eps=-0.1), "eps"),
    ],
)
def test_constructors_refuse_nonsense(make, match):
    """Infinite, NaN, non-positive or unordered parameters: a ValueError naming the argument and
    its allowed range, instead of NaN alphas later."""
    with pytest.raises(ValueError, match=match) as err:
        make()
    assert "must" in str(err.value)
