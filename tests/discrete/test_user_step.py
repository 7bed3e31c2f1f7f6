"""The public step interface: a user-written step, explicit grids, trajectories, pc with a step.

Everything here uses public names only (`import diffax.discrete as dd`), as a user would.
"""

import chex
import discrete_support as sup
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffax.discrete as dd

TGT = sup.target()
N = 8000
MASKED = dd.Masked(sup.V)
MODEL = TGT.denoiser(MASKED)


# -- the ten-line user step of docs/discrete.md ----------------------------------------------
def my_step(model, key, x, state, t, s):
    """One ancestral step t -> s: x_s ~ sum_x0 p(x_0 | x_t) q(x_s | x_t, x_0)."""
    logits, state = model.denoiser_logits(state, x, t)  # [B, L, V]; counts one NFE
    posterior = model.process.posterior_logits(x, s, t, logits)  # [B, L, S]
    return dd.sample_categorical(key, posterior), state


MY_SAMPLER = dd.Step(init=lambda model, x, ts: model.init(), step=my_step, name="mine")
# ---------------------------------------------------------------------------------------------


def product_of_marginals_tv() -> float:
    """TV between the target and the law with the same per-position marginals, independent:
    what a sampler that ignored the correlations between tokens would converge to."""
    one_hot = np.eye(sup.V)[TGT.sequences]  # [n, L, V]
    marginals = np.einsum("n,nlv->lv", TGT.probs, one_hot)
    independent = np.prod(np.einsum("nlv,lv->nl", one_hot, marginals), axis=-1)
    return 0.5 * float(np.abs(independent - TGT.probs).sum())


def draw(sampler, num_steps, n, seed=0, transform=jax.jit, process=MASKED, model=MODEL, **kw):
    fn = transform(
        lambda key: dd.sample(
            key, process, model, (n, sup.L), sampler=sampler, num_steps=num_steps, **kw
        )
    )
    x, info = fn(jax.random.key(seed))
    return np.asarray(x), info


def test_user_step_reproduces_the_target():
    x, info = draw(MY_SAMPLER, 64, N)
    bound = 0.05
    assert TGT.total_variation(x) < bound, TGT.total_variation(x)
    # Ignoring the correlations between positions would fail the bound by far.
    assert product_of_marginals_tv() > 2 * bound
    assert int(info["nfe"]) == 64


@pytest.mark.parametrize("transform", [lambda f: f, jax.jit], ids=["eager", "jit"])
def test_user_step_equals_the_builtin_ancestral(transform):
    """Same math, same keys: the same tokens, eagerly and under jit. On a uniform process, where
    the built-in step draws from the posterior as the user step does (for `Masked` it takes a
    faster path with the same law but other draws: one Bernoulli per position, then the class)."""
    uniform = dd.Uniform(sup.V)
    kw = dict(transform=transform, process=uniform, model=TGT.denoiser(uniform))
    mine, info = draw(MY_SAMPLER, 6, 64, **kw)
    builtin, _ = draw(dd.ancestral(), 6, 64, **kw)
    by_name, _ = draw("ancestral", 6, 64, **kw)
    np.testing.assert_array_equal(mine, builtin)
    np.testing.assert_array_equal(mine, by_name)
    assert int(info["nfe"]) == 6


def test_run_steps_is_the_loop_behind_sample():
    key = jax.random.key(3)
    x, info = dd.run_steps(key, MY_SAMPLER, MASKED, MODEL, (32, sup.L), dd.time_grid(5))
    y, _ = dd.sample(key, MASKED, MODEL, (32, sup.L), sampler=MY_SAMPLER, num_steps=5)
    np.testing.assert_array_equal(x, y)
    chex.assert_shape(x, (32, sup.L))
    assert x.dtype == jnp.int32 and int(info["nfe"]) == 5


def test_user_step_with_its_own_state():
    """A step keeps entries of its own next to the model's in the state dict."""

    def init(model, x, ts):
        return {**model.init(), "calls": jnp.zeros((), jnp.int32)}

    def step(model, key, x, state, t, s):
        x, state = my_step(model, key, x, state, t, s)
        return x, {**state, "calls": state["calls"] + 1}

    x, info = draw(dd.Step(init=init, step=step), 7, 16)
    assert np.all((x >= 0) & (x < sup.V)) and int(info["nfe"]) == 7


def test_explicit_non_uniform_grid():
    # The uniform grid passed explicitly is the default grid, draw for draw.
    uniform, _ = draw("ancestral", 8, 256, ts=dd.time_grid(8))
    default, _ = draw("ancestral", 8, 256)
    np.testing.assert_array_equal(uniform, default)
    # Two intervals [1, s, 0]: with s near 1 nothing is revealed before the last interval,
    # which draws every token from its marginal independently; s = 1/2 does much better.
    pm_tv, noise = product_of_marginals_tv(), sup.tv_threshold(TGT, N)
    tv_late = TGT.total_variation(draw("ancestral", 2, N, ts=jnp.array([1.0, 0.999, 0.0]))[0])
    x_half, info = draw("ancestral", 2, N, ts=jnp.array([1.0, 0.5, 0.0]))
    tv_half = TGT.total_variation(x_half)
    assert int(info["nfe"]) == 2
    assert abs(tv_late - pm_tv) < noise, (tv_late, pm_tv)
    assert tv_half < pm_tv - 2 * noise, (tv_half, pm_tv)


@pytest.mark.parametrize(
    "ts, num_steps, match",
    [
        (jnp.array([1.0, 0.5, 0.6, 0.0]), 3, "strictly decreasing"),
        (jnp.array([1.0, 0.5, 0.1]), 2, "must end at t = 0"),
        (jnp.array([1.2, 0.5, 0.0]), 2, "ts"),
        (jnp.array([1.0, 0.5, 0.0]), 3, "num_steps"),
        (jnp.ones((2, 2)), 1, "1-D"),
    ],
)
def test_bad_grids(ts, num_steps, match):
    with pytest.raises(ValueError, match=match):
        dd.sample(
            jax.random.key(0),
            MASKED,
            MODEL,
            (2, sup.L),
            sampler="euler",
            num_steps=num_steps,
            ts=ts,
        )


@pytest.mark.parametrize("transform", [lambda f: f, jax.jit], ids=["eager", "jit"])
def test_trajectory(transform):
    x, info = draw("ancestral", 5, 16, transform=transform, trajectory=True)
    path = np.asarray(info["trajectory"])
    chex.assert_shape(path, (6, 16, sup.L))
    assert np.all(path[0] == MASKED.mask_id)  # the prior of the linear schedule: all masks
    np.testing.assert_array_equal(path[-1], x)
    # Masked ancestral sampling only reveals: the number of masks never grows.
    masks = (path == MASKED.mask_id).sum(axis=-1)
    assert np.all(np.diff(masks, axis=0) <= 0)
    x_plain, info_plain = draw("ancestral", 5, 16, transform=transform)
    np.testing.assert_array_equal(x_plain, x)
    assert "trajectory" not in info_plain


def test_pc_with_a_predictor_step_object():
    x, info = draw(dd.pc(predictor=MY_SAMPLER, num_corrector_steps=1), 64, N)
    assert TGT.total_variation(x) < 0.05
    assert int(info["nfe"]) == 2 * 64 - 1  # one corrector evaluation per interior step
    named, _ = draw("pc", 6, 64, predictor=dd.ancestral())
    obj, _ = draw(dd.pc(predictor=dd.ancestral()), 6, 64)
    np.testing.assert_array_equal(named, obj)
    with pytest.raises(TypeError, match="predictor must be a Step"):
        dd.pc(predictor=my_step)


def test_unknown_option_names_the_allowed_ones():
    loop = "temperature, top_p, cache, fixed_tokens, fixed_mask, ts, trajectory"
    with pytest.raises(
        ValueError, match=f"option 'eta' for sampler 'mine'; allowed options: {loop}"
    ):
        draw(MY_SAMPLER, 2, 2, eta=0.1)
    with pytest.raises(
        TypeError, match="allowed options: eta, strategy, t_on, t_off, alpha_on, temperature"
    ):
        draw("remdm", 2, 2, etta=0.1)
    with pytest.raises(TypeError, match="option 'etta' for sampler 'remdm'; allowed options: eta"):
        dd.remdm(etta=0.1)
    assert dd.sampler_options("remdm")[:6] == (
        "eta",
        "strategy",
        "t_on",
        "t_off",
        "alpha_on",
        "temperature",
    )
    assert dd.sampler_options(MY_SAMPLER) == tuple(loop.split(", "))
    with pytest.raises(TypeError, match="must be a diffax.discrete.Step"):
        dd.run_steps(jax.random.key(0), my_step, MASKED, MODEL, (2, sup.L), dd.time_grid(2))


def test_first_hitting_uses_its_own_grid_and_any_explicit_one():
    """first_hitting reveals one token per interval; its default grid has L intervals."""
    x, info = draw("first_hitting", 1, 256)
    assert int(info["nfe"]) == sup.L and np.all(x < sup.V)
    # A shorter explicit grid reveals what remains at the last interval: fewer calls, no mask.
    x, info = draw("first_hitting", 2, 256, ts=dd.time_grid(2))
    assert int(info["nfe"]) == 2 and np.all((x >= 0) & (x < sup.V))
