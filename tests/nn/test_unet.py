"""The DDPM-style U-Net."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from diffax.nn import UNet
from tests.nn.test_mlp import build


@pytest.fixture(scope="module")
def model():
    return build(lambda: UNet(3, 8, (1, 2), 1, (1,), rngs=nnx.Rngs(0), num_heads=2, num_groups=4))


def test_shapes_and_time_dependence(model):
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
    fn = jax.jit(lambda x, t: model(x, t))
    out = fn(x, jnp.array([0.2, 0.2]))
    assert out.shape == (2, 8, 8, 3) and out.dtype == jnp.float32
    assert np.all(np.isfinite(out))
    assert not np.allclose(out, fn(x, jnp.array([0.8, 0.8])))
    # Examples do not interact (GroupNorm, not BatchNorm).
    other = fn(x.at[1].set(0.0), jnp.array([0.2, 0.2]))
    np.testing.assert_allclose(other[0], out[0], rtol=1e-5, atol=1e-6)


def test_conv_kernels_carry_logical_axes(model):
    _, params = nnx.split(model, nnx.Param)
    variables = jax.tree.leaves(params, is_leaf=lambda v: isinstance(v, nnx.Variable))
    kernels = [v for v in variables if v.ndim == 4]
    assert kernels
    for v in variables:
        axes = v.get_metadata().get("logical_axes")
        assert axes is not None and len(axes) == v.ndim
    assert model.down[0].conv1.kernel.get_metadata()["logical_axes"] == (None, None, "embed", "mlp")
    assert all(v.get_metadata()["logical_axes"][:2] == (None, None) for v in kernels)
    assert model.down[-1].attn is not None and model.down[0].attn is None


def test_bad_arguments(model):
    with pytest.raises(ValueError, match="divisible by 2"):
        model(jnp.zeros((1, 7, 7, 3)), jnp.zeros(1))
    with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
        model(jnp.zeros((1, 8, 8, 1)), jnp.zeros(1))
    with pytest.raises(ValueError, match="attention_levels"):
        nnx.eval_shape(lambda: UNet(1, 8, (1, 2), 1, (2,), rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="num_groups"):
        nnx.eval_shape(lambda: UNet(1, 12, (1,), 1, (), rngs=nnx.Rngs(0), num_groups=8))


@pytest.mark.slow  # two U-Net gradient compiles: about 20 s of CPU
def test_remat_per_level_gives_the_same_gradients():
    make = lambda remat: build(
        lambda: UNet(1, 4, (1, 2), 1, (), rngs=nnx.Rngs(0), num_groups=2, remat=remat)
    )
    x = jax.random.normal(jax.random.key(0), (2, 4, 4, 1))
    t = jnp.array([0.2, 0.6])

    def grads(module):
        graphdef, params = nnx.split(module, nnx.Param)
        loss = lambda p: jnp.mean(jnp.square(nnx.merge(graphdef, p)(x, t) - x))
        return jax.jit(jax.value_and_grad(loss))(params)

    (loss, expected), (loss_remat, got) = grads(make("none")), grads(make("full"))
    np.testing.assert_allclose(loss_remat, loss, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), got, expected)
    with pytest.raises(ValueError, match=r"model\.remat"):
        nnx.eval_shape(lambda: UNet(1, 8, (1,), 1, (), rngs=nnx.Rngs(0), remat="sometimes"))


def test_remat_runs_inside_a_lax_loop_when_built_outside():
    module = nnx.eval_shape(
        lambda: UNet(1, 4, (1, 2), 1, (1,), rngs=nnx.Rngs(0), num_groups=2, remat="full")
    )
    graphdef, state = nnx.split(module)
    x = jnp.zeros((2, 4, 4, 1))

    def sample_like(state):
        model = nnx.merge(graphdef, state)
        return jax.lax.fori_loop(0, 2, lambda i, acc: acc + model(x, 0.5), x)

    assert jax.eval_shape(sample_like, state).shape == x.shape
