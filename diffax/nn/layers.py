"""Building blocks shared by diffax networks (Flax NNX).

Every parameter carries `logical_axes` metadata (e.g. `("embed", "mlp")`); the training stack maps
logical axes to mesh axes with rules from the config (`diffax.training.sharding`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx


class Dense(nnx.Module):
    """`y = x @ W + b` with logically-named parameter axes.

    Args:
      in_features, out_features: sizes.
      logical_axes: names of the kernel's two axes (used for sharding).
      use_bias: add a bias (named after the kernel's output axis).
      zero_init: initialise the kernel to zero (adaLN-zero gates, output heads).
      dtype: computation dtype (e.g. bfloat16); parameters stay float32.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        logical_axes: tuple[str | None, str | None],
        *,
        rngs: nnx.Rngs,
        use_bias: bool = True,
        zero_init: bool = False,
        dtype: jnp.dtype = jnp.float32,
    ):
        if zero_init:
            w = jnp.zeros((in_features, out_features), jnp.float32)
        else:
            w = jax.random.normal(rngs.params(), (in_features, out_features)) / math.sqrt(
                in_features
            )
        self.kernel = nnx.Param(w, logical_axes=logical_axes)
        self.bias = (
            nnx.Param(jnp.zeros((out_features,)), logical_axes=(logical_axes[1],))
            if use_bias
            else None
        )
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        y = jnp.dot(x.astype(self.dtype), self.kernel[...].astype(self.dtype))
        if self.bias is not None:
            y = y + self.bias[...].astype(self.dtype)
        return y


class Embed(nnx.Module):
    """Token embedding table `[num_ids, dim]` with logical axes ("vocab", "embed")."""

    def __init__(self, num_ids: int, dim: int, *, rngs: nnx.Rngs, dtype=jnp.float32):
        self.table = nnx.Param(
            jax.random.normal(rngs.params(), (num_ids, dim)) * 0.02, logical_axes=("vocab", "embed")
        )
        self.dtype = dtype

    def __call__(self, ids: jax.Array) -> jax.Array:
        # Gather the (possibly FSDP-sharded) table before the lookup, as FSDP does for every
        # weight: a gather from a feature-sharded table otherwise yields feature-sharded
        # activations that XLA must reshard in full.
        table = replicate_under_mesh(self.table[...])
        return constrain_batch(jnp.take(table, ids, axis=0).astype(self.dtype))


BATCH_AXES = ("data", "fsdp")


def constrain_batch(x: jax.Array) -> jax.Array:
    """Pins activations `[B, ...]` to be split over the batch axes only, when a mesh is set.

    With FSDP the parameters are sharded over "fsdp" on their embedding axis; without this hint
    XLA's propagation may shard activations on features too and then reshard them at every
    layer (seen as "involuntary full rematerialization"). Outside `jax.set_mesh`, or on a mesh
    without ("data", "fsdp") axes, this is the identity.
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or not all(a in mesh.axis_names for a in BATCH_AXES):
        return x
    spec = jax.sharding.PartitionSpec(BATCH_AXES, *([None] * (x.ndim - 1)))
    return jax.lax.with_sharding_constraint(x, spec)


def replicate_under_mesh(w: jax.Array) -> jax.Array:
    """All-gathers `w` (replicated layout) when a mesh is set; the identity otherwise."""
    if jax.sharding.get_abstract_mesh().empty:
        return w
    return jax.lax.with_sharding_constraint(w, jax.sharding.PartitionSpec())


def layer_norm(x: jax.Array, eps: float = 1e-6) -> jax.Array:
    """Affine-free layer norm over the last axis, computed in float32."""
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
    return ((x32 - mean) * jax.lax.rsqrt(var + eps)).astype(x.dtype)


def sinusoidal_embedding(t: jax.Array, dim: int, max_period: float = 10_000.0) -> jax.Array:
    """Fourier features of a time `t: [B]` in [0, 1] (scaled by 1000). Returns `[B, dim]`.

    Reference: Vaswani et al. 2017; Ho et al. 2020 (timestep embedding).
    """
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = 1000.0 * t.astype(jnp.float32)[:, None] * freqs[None]
    return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


def rotary(x: jax.Array, positions: jax.Array, base: float = 10_000.0) -> jax.Array:
    """Rotary position embedding of `x: [B, L, H, D]` (D even) at integer `positions: [L]`.

    Reference: Su et al. 2021, RoFormer.
    """
    d = x.shape[-1]
    freqs = base ** (-jnp.arange(0, d // 2, dtype=jnp.float32) * 2 / d)
    angles = positions.astype(jnp.float32)[:, None] * freqs[None]  # [L, D/2]
    cos, sin = jnp.cos(angles)[None, :, None], jnp.sin(angles)[None, :, None]
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)
    return out.astype(x.dtype)
