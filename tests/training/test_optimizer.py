"""AdamW with float32 or bfloat16 moments against a hand-written Adam with the same rounding."""

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import pytest

from diffax.training.optimizer import adamw, scale_by_adam_stored_as

B1, B2, EPS, LR, WD = 0.9, 0.95, 1e-8, 1e-2, 0.1


def _grads(step):
    rng = np.random.default_rng(step)
    return {
        "w": (rng.normal(size=(4, 3)) * 10.0 ** rng.integers(-3, 2)).astype(np.float32),
        "b": rng.normal(size=(3,)).astype(np.float32),
    }


def _reference(params, num_steps, store):
    """AdamW in numpy: float32 arithmetic, moments stored through `store` after each update."""
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(x) for k, x in params.items()}
    p = {k: x.copy() for k, x in params.items()}
    for step in range(1, num_steps + 1):
        g = _grads(step)
        lr = 0.0 if step == 1 else LR  # the schedule is 0 at count 0 (end of a 0-step warm-up)
        for k in p:
            m32 = np.float32(B1) * m[k] + np.float32(1 - B1) * g[k]
            v32 = np.float32(B2) * v[k] + np.float32(1 - B2) * g[k] * g[k]
            m_hat = m32 / np.float32(1 - B1**step)
            v_hat = v32 / np.float32(1 - B2**step)
            update = m_hat / (np.sqrt(v_hat) + np.float32(EPS)) + np.float32(WD) * p[k]
            p[k] = p[k] - np.float32(lr) * update
            m[k], v[k] = store(m32), store(v32)
    return p, m, v


def _run(moments, num_steps):
    tx = adamw(
        LR,
        warmup_steps=0,
        num_steps=100,
        decay="constant",
        weight_decay=WD,
        b1=B1,
        b2=B2,
        grad_clip=0.0,
        moments=moments,
    )
    params = {"w": np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3), "b": np.ones(3, "f4")}
    params = jax.tree.map(jnp.asarray, params)
    state = tx.init(params)
    update = jax.jit(tx.update)
    for step in range(1, num_steps + 1):
        updates, state = update(jax.tree.map(jnp.asarray, _grads(step)), state, params)
        params = optax.apply_updates(params, updates)
    return params, state


def _adam_state(state):
    return next(
        s
        for s in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState))
        if isinstance(s, optax.ScaleByAdamState)
    )


@pytest.mark.parametrize("moments", ["float32", "bfloat16"])
def test_adamw_matches_hand_written_adam(moments):
    dtype = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16}[moments]
    store = lambda x: x.astype(dtype).astype(np.float32)
    init = {"w": np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3), "b": np.ones(3, "f4")}
    want_p, want_m, want_v = _reference(init, 5, store)
    params, state = _run(moments, 5)
    adam = _adam_state(state)
    for k in want_p:
        np.testing.assert_allclose(np.asarray(params[k]), want_p[k], rtol=2e-6, atol=1e-7)
        assert adam.mu[k].dtype == dtype and adam.nu[k].dtype == dtype
        # One rounding step of the storage dtype at most (float32 pow/sqrt may differ by 1 ulp).
        ulp = 2.0**-7 if moments == "bfloat16" else 1e-6
        np.testing.assert_allclose(np.asarray(adam.mu[k], np.float32), want_m[k], rtol=ulp)
        np.testing.assert_allclose(np.asarray(adam.nu[k], np.float32), want_v[k], rtol=ulp)


def test_bfloat16_moments_keep_optax_state_structure():
    params = {"w": jnp.zeros((2, 3)), "b": jnp.zeros(3)}
    kw = dict(warmup_steps=1, num_steps=10, weight_decay=0.1)
    f32 = adamw(1e-3, **kw).init(params)
    bf16 = adamw(1e-3, moments="bfloat16", **kw).init(params)
    assert jax.tree.structure(f32) == jax.tree.structure(bf16)
    leaves = jax.tree.leaves(_adam_state(bf16).mu) + jax.tree.leaves(_adam_state(bf16).nu)
    assert {x.dtype for x in leaves} == {jnp.dtype(jnp.bfloat16)}


def test_scale_by_adam_stored_as_float32_equals_optax():
    g = jax.tree.map(jnp.asarray, _grads(1))
    ours, theirs = scale_by_adam_stored_as(jnp.float32, 0.8, 0.9), optax.scale_by_adam(0.8, 0.9)
    s1, s2 = ours.init(g), theirs.init(g)
    for step in range(3):
        g = jax.tree.map(jnp.asarray, _grads(step + 1))
        u1, s1 = ours.update(g, s1)
        u2, s2 = theirs.update(g, s2)
        for k in g:
            np.testing.assert_allclose(u1[k], u2[k], rtol=1e-6)


def test_unknown_moment_dtype_is_refused():
    with pytest.raises(ValueError, match="optimizer.moment_dtype='float16'.*'bfloat16'"):
        adamw(1e-3, warmup_steps=1, num_steps=10, moments="float16")
