"""The DiT-style token transformer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from diffax.nn import DiffusionTransformer, rotary


@pytest.fixture(scope="module")
def model():
    m = DiffusionTransformer(6, 5, 12, 32, 2, 2, rngs=nnx.Rngs(0))
    # adaLN-zero starts as the identity; perturb every parameter so the tests see a generic net.
    _, params = nnx.split(m, nnx.Param)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    noisy = [x + 0.1 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)]
    nnx.update(m, jax.tree.unflatten(treedef, noisy))
    return m


def test_shapes_and_dtype(model):
    out = model(jnp.zeros((3, 12), jnp.int32), jnp.array([0.0, 0.5, 1.0]))
    assert out.shape == (3, 12, 5) and out.dtype == jnp.float32


def test_bidirectional_and_time_conditioned(model):
    x = jnp.array([[0, 1, 2, 3, 4, 5, 0, 1]])
    base = model(x, jnp.array([0.3]))
    changed = model(x.at[0, -1].set(2), jnp.array([0.3]))
    assert not np.allclose(base[0, 0], changed[0, 0])  # position 0 sees the last token
    assert not np.allclose(base, model(x, jnp.array([0.7])))


def test_time_free_mode_ignores_t():
    m = DiffusionTransformer(6, 5, 12, 32, 1, 2, rngs=nnx.Rngs(0), time_conditioning=False)
    x = jnp.array([[0, 1, 2, 3]])
    np.testing.assert_array_equal(m(x, jnp.array([0.1])), m(x, jnp.array([0.9])))


def test_rotary_preserves_norm_and_relative_positions():
    q = jax.random.normal(jax.random.key(0), (1, 5, 1, 8))
    k = jax.random.normal(jax.random.key(1), (1, 5, 1, 8))
    rq, rk = rotary(q, jnp.arange(5)), rotary(k, jnp.arange(5))
    np.testing.assert_allclose(jnp.linalg.norm(rq, axis=-1), jnp.linalg.norm(q, axis=-1), rtol=1e-5)
    # <R_m q, R_n k> depends only on n - m: shifting both positions leaves it unchanged.
    sq, sk = rotary(q, jnp.arange(5) + 7), rotary(k, jnp.arange(5) + 7)
    np.testing.assert_allclose(
        jnp.einsum("blhd,bmhd->lm", rq, rk),
        jnp.einsum("blhd,bmhd->lm", sq, sk),
        rtol=1e-4,
        atol=1e-5,
    )


def test_bad_arguments():
    with pytest.raises(ValueError, match="divisible by num_heads"):
        DiffusionTransformer(6, 5, 12, 30, 1, 4, rngs=nnx.Rngs(0))
    m = DiffusionTransformer(6, 5, 4, 16, 1, 2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="exceeds max_len=4"):
        m(jnp.zeros((1, 5), jnp.int32), jnp.zeros(1))
