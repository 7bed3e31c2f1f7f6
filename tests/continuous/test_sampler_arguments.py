"""Sampler argument errors: unknown samplers and options, grids out of range or reversed, SDE
samplers started where the reverse SDE is singular, non-finite samples."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffax.continuous as dc

from .test_samplers import T_MIN, _range, _recording

VP = dc.VP()


def test_bad_arguments(ring_mixture):
    model = ring_mixture.model_fn(VP, "eps")
    run = functools.partial(dc.sample, jax.random.PRNGKey(0), VP, model, (4, 2))
    with pytest.raises(ValueError, match="unknown sampler 'heun'.*adaptive_ode.*restart"):
        run(sampler="heun", num_steps=4)
    with pytest.raises(ValueError, match="prediction='noise' is not allowed.*'eps'"):
        run(sampler="ddim", num_steps=4, prediction="noise")
    with pytest.raises(ValueError, match="num_steps must be an integer >= 1"):
        run(sampler="ddim", num_steps=0)
    with pytest.raises(TypeError, match="num_steps"):
        run(sampler="ddim", num_steps=4.0)
    with pytest.raises(ValueError, match="t_min must lie in"):
        run(sampler="ddim", num_steps=4, t_min=-0.1)
    with pytest.raises(ValueError, match="ts must be strictly decreasing"):
        run(sampler="ddim", num_steps=4, ts=jnp.asarray([0.1, 0.5, 1.0]))
    with pytest.raises(TypeError, match="unknown option 'churn'.*s_churn"):
        run(sampler="edm_heun", num_steps=4, churn=1.0)
    bad = lambda x, t: x[:, :1]
    with pytest.raises(
        ValueError, match="model_fn output has shape \\(4, 1\\); expected \\(4, 2\\)"
    ):
        jax.eval_shape(
            lambda k: dc.sample(k, VP, bad, (4, 2), sampler="pc", num_steps=3),
            jax.random.PRNGKey(0),
        )


SDE_SAMPLERS = sorted(n for n in dc.SAMPLERS.names() if dc.SAMPLERS.get(n)().uses_sde_t_max)


def test_sde_samplers_refuse_to_start_where_the_reverse_sde_is_singular(ring_mixture):
    """RectifiedFlow: alpha(1) = 0, the reverse SDE (and x/alpha) is singular at t = 1, so these
    samplers refuse t_max > process.sde_t_max instead of returning NaN."""
    rf = dc.RectifiedFlow()
    model = ring_mixture.model_fn(rf, "eps")
    assert SDE_SAMPLERS == ["adaptive_sde", "edm_heun", "euler_maruyama", "pc", "restart"]
    x1 = jax.random.normal(jax.random.PRNGKey(0), (8, 2))
    ts = dc.time_grid(rf, 4, t_min=T_MIN, t_max=1.0)
    for name in SDE_SAMPLERS:
        with pytest.raises(ValueError, match=r"sde_t_max = 0\.99 .*t_max=1\.0.*\(0, 0\.99\]"):
            dc.sample(
                jax.random.PRNGKey(0), rf, model, (8, 2), sampler=name, num_steps=4, t_max=1.0
            )
        with pytest.raises(ValueError, match=r"sde_t_max = 0\.99 .*t_max=1\.0.*\(0, 0\.99\]"):
            dc.run_steps(jax.random.PRNGKey(0), dc.SAMPLERS.get(name)(), rf, model, x1, ts)
    with pytest.raises(ValueError, match=r"t_max=1\.0"):  # under jit the grid is traced
        jax.jit(lambda k: dc.sample(k, rf, model, (8, 2), sampler="pc", num_steps=4, t_max=1.0))(
            jax.random.PRNGKey(0)
        )
    # EDM churn raises the noise level; it must not push past sde_t_max either.
    model, seen = _recording(model)
    x, _ = dc.sample(
        jax.random.PRNGKey(0), rf, model, (64, 2), sampler="edm_heun", num_steps=8, s_churn=40.0
    )
    assert np.all(np.isfinite(x)) and _range(seen)[1] <= np.float32(rf.sde_t_max)


def test_samplers_refuse_reversed_and_out_of_range_grids(ring_mixture):
    """Every sampler, called directly: an increasing grid (t_min > t_max) or times outside
    [0, 1] are ValueErrors naming both ends, eager and with a concrete grid under jit."""
    model = ring_mixture.model_fn(VP, "eps")
    x1 = jax.random.normal(jax.random.PRNGKey(0), (4, 2))
    key = jax.random.PRNGKey(0)
    increasing, too_late = jnp.asarray([T_MIN, 0.5, 1.0]), jnp.asarray([1.5, 0.5, T_MIN])
    for name in dc.SAMPLERS.names():
        step = dc.SAMPLERS.get(name)()
        fn = lambda key, *args, step=step: dc.run_steps(key, step, *args)  # noqa: E731
        with pytest.raises(ValueError, match=r"t_max = ts\[0\] = 0\.001, t_min = ts\[-1\] = 1\.0$"):
            fn(key, VP, model, x1, increasing)
        with pytest.raises(ValueError, match="ts must lie in"):
            jax.jit(lambda k, fn=fn: fn(k, VP, model, x1, too_late))(key)
        with pytest.raises(ValueError, match="ts must be a 1-D grid"):
            fn(key, VP, model, x1, jnp.asarray([0.5]))
    with pytest.raises(ValueError, match="t_min=0.5.*t_max=0.2"):
        dc.sample(key, VP, model, (4, 2), sampler="ddim", num_steps=4, t_min=0.5, t_max=0.2)
    with pytest.raises(ValueError, match="t_max must lie in"):
        dc.sample(key, VP, model, (4, 2), sampler="ddim", num_steps=4, t_max=1.5)
    with pytest.raises(ValueError, match="ts is given, so t_min would be ignored"):
        dc.sample(
            key, VP, model, (4, 2), sampler="ddim", num_steps=2, ts=[1.0, 0.5, 0.1], t_min=0.2
        )
    with pytest.raises(ValueError, match="num_steps=4 does not match ts, which has 2 intervals"):
        dc.sample(key, VP, model, (4, 2), sampler="ddim", num_steps=4, ts=[1.0, 0.5, 0.1])


def test_unknown_option_in_a_direct_call(ring_mixture):
    model = ring_mixture.model_fn(VP, "eps")
    ts = dc.time_grid(VP, 4, t_min=T_MIN)
    x1 = jax.random.normal(jax.random.PRNGKey(0), (4, 2))
    with pytest.raises(ValueError, match="unknown option 'churn' for sampler 'edm_heun'.*s_churn"):
        dc.run_steps(jax.random.PRNGKey(0), dc.samplers.edm_heun(churn=1.0), VP, model, x1, ts)


def test_non_finite_samples_are_an_error_when_eager(ring_mixture):
    """A model that returns NaN never yields silent NaN samples from an eager `dc.sample`;
    under jit (values unknown while tracing) the NaN samples are returned as documented."""
    good = ring_mixture.model_fn(VP, "eps")
    nan_model = lambda x, t: good(x, t) * jnp.nan
    run = functools.partial(
        dc.sample, process=VP, shape=(8, 2), sampler="dpm_solver_pp_2m", num_steps=4
    )
    with pytest.raises(ValueError, match="non-finite values"):
        run(jax.random.PRNGKey(0), model_fn=nan_model)
    jitted, _ = jax.jit(lambda k: run(k, model_fn=nan_model))(jax.random.PRNGKey(0))
    assert bool(jnp.all(jnp.isnan(jitted)))
    samples, _ = run(jax.random.PRNGKey(0), model_fn=good)
    assert bool(jnp.all(jnp.isfinite(samples)))
