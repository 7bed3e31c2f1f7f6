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
