"""Adaptive RK solvers (own and diffrax) on an ODE with a closed-form solution."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffax.continuous as dc


def _field(t, y):
    # dy/dt = -2 t y (both leaves): y(t) = y(t0) exp(t0^2 - t^2)
    return jax.tree_util.tree_map(lambda v: -2.0 * t * v, y)


@pytest.mark.parametrize(
    "backend,method",
    [("own", "dopri5"), ("own", "bosh3"), ("diffrax", "dopri5"), ("diffrax", "tsit5")],
)
def test_solution_accuracy_and_nfe(backend, method):
    calls = []

    def counted(t, y):
        jax.debug.callback(lambda: calls.append(1))
        return _field(t, y)

    y0 = {"a": jnp.asarray([1.0, -2.0]), "b": jnp.asarray(0.5)}
    for t0, t1 in ((0.0, 1.5), (1.5, 0.2)):
        calls.clear()
        y1, stats = jax.jit(
            lambda y0, t0=t0, t1=t1: dc.solve_adaptive(
                counted, y0, t0, t1, method=method, backend=backend, rtol=1e-6, atol=1e-6
            )
        )(y0)
        jax.effects_barrier()
        factor = np.exp(t0**2 - t1**2)
        rtol = 2e-5 if method != "bosh3" else 2e-4  # 3rd order: global error above local tol
        np.testing.assert_allclose(y1["a"], np.array([1.0, -2.0]) * factor, rtol=rtol)
        np.testing.assert_allclose(y1["b"], 0.5 * factor, rtol=rtol)
        assert bool(stats.success) and int(stats.num_accepted) <= int(stats.num_steps)
        assert int(stats.nfe) == len(calls), (int(stats.nfe), len(calls))


def test_max_steps_reports_failure():
    y1, stats = dc.solve_adaptive(_field, jnp.ones(2), 0.0, 3.0, rtol=1e-8, atol=1e-8, max_steps=3)
    assert not bool(stats.success) and int(stats.num_steps) == 3


def test_solver_errors():
    with pytest.raises(ValueError, match="backend='scipy' is not allowed"):
        dc.solve_adaptive(_field, jnp.ones(2), 0.0, 1.0, backend="scipy")
    with pytest.raises(ValueError, match="method='tsit5' is not allowed.*dopri5"):
        dc.solve_adaptive(_field, jnp.ones(2), 0.0, 1.0, method="tsit5")


@pytest.mark.parametrize("backend", ["own", "diffrax"])
def test_field_is_only_evaluated_inside_the_interval(backend):
    """A fast-changing field makes Hairer's first trial step (0.01 |y| / |f|) longer than the
    interval; the solver must still never evaluate it outside [t0, t1], in either direction."""
    seen = []

    def field(t, y):
        jax.debug.callback(lambda t: seen.append(float(t)), t)
        return -1e-3 * y  # |y| / |f| = 1000: the first trial step would be 10

    for t0, t1 in ((1.0, 0.2), (0.2, 1.0)):
        seen.clear()
        y1, stats = dc.solve_adaptive(
            field, jnp.ones(3), t0, t1, method="bosh3", backend=backend, rtol=1e-4, atol=1e-4
        )
        jax.effects_barrier()
        assert bool(stats.success)
        assert min(seen) >= min(t0, t1) and max(seen) <= max(t0, t1), (t0, t1, min(seen), max(seen))
        np.testing.assert_allclose(y1, np.exp(-1e-3 * (t1 - t0)), rtol=1e-5)
