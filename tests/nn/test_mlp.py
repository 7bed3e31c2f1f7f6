"""The time-conditioned MLP for vector data."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from diffax.nn import TimeMLP


def build(make):
    """A module with NumPy-random parameters: generic (no zero-initialised layers) and fast.

    Building a module eagerly (or inside `jit`) compiles every random initialiser; on a 2-core CPU
    that dominates a small test. Kernels get N(0, 1/fan_in), vectors N(0, 0.1^2).
    """
    graphdef, state = nnx.split(nnx.eval_shape(make))
    rng = np.random.default_rng(1)

    def fill(v):
        fan_in = int(np.prod(v.shape[:-1])) if len(v.shape) > 1 else 100
        return (rng.standard_normal(v.shape) / np.sqrt(fan_in)).astype(np.float32)

    return nnx.merge(graphdef, jax.tree.map(fill, state))


def test_shapes_time_dependence_and_zero_init():
    make = lambda: TimeMLP(3, 16, 2, rngs=nnx.Rngs(0), time_features=8)
    x = jax.random.normal(jax.random.key(0), (5, 3))
    t = jnp.full((5,), 0.3)
    # A freshly initialised net outputs 0 (zero-initialised output layer); one jit, not eager ops.
    np.testing.assert_array_equal(jax.jit(lambda x, t: make()(x, t))(x, t), 0.0)
    model = build(make)
    fn = jax.jit(lambda x, t: model(x, t))
    out = fn(x, t)
    assert out.shape == (5, 3) and out.dtype == jnp.float32
    assert not np.allclose(out, fn(x, jnp.full((5,), 0.7)))
    np.testing.assert_allclose(fn(x, 0.3), out, rtol=1e-6)  # scalar t broadcasts
    # Examples are independent: changing one row changes only that row's output.
    np.testing.assert_allclose(fn(x.at[0].set(9.0), t)[1:], out[1:], rtol=1e-6)


def test_every_parameter_has_logical_axes():
    model = nnx.eval_shape(lambda: TimeMLP(2, 8, 1, rngs=nnx.Rngs(0)))
    _, params = nnx.split(model, nnx.Param)
    variables = jax.tree.leaves(params, is_leaf=lambda v: isinstance(v, nnx.Variable))
    assert variables
    for v in variables:
        axes = v.get_metadata().get("logical_axes")
        assert axes is not None and len(axes) == v.ndim
    kernel = model.blocks[0].fc1.kernel
    assert kernel.get_metadata()["logical_axes"] == ("embed", "mlp")


def test_bad_arguments():
    with pytest.raises(ValueError, match="time_features"):
        TimeMLP(2, 8, 1, rngs=nnx.Rngs(0), time_features=7)
    with pytest.raises(ValueError, match=r"shape \[B, 2\]"):
        build(lambda: TimeMLP(2, 8, 1, rngs=nnx.Rngs(0)))(jnp.zeros((4, 3)), jnp.zeros(4))
