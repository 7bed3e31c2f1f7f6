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


class Einsum(nnx.Module):
    """`y = einsum(equation, x, W) (+ b)`: a linear map with a multi-axis kernel.

    Used for per-head projections (`"bld,dhk->blhk"` with a `[D, H, K]` kernel), so a
    tensor-parallel split of the heads axis never cuts through a fused q/k/v or head axis.

    Args:
      equation: einsum equation of the input and the kernel.
      kernel_shape: shape of the kernel.
      logical_axes: one name (or None) per kernel axis (used for sharding).
      fan_in: input size; the kernel starts as `normal / sqrt(fan_in)`.
      bias_axes: if not None, a bias over the last `len(bias_axes)` kernel axes, with these
        logical names.
      zero_init: initialise the kernel to zero.
      dtype: computation dtype; parameters stay float32.
    """

    def __init__(
        self,
        equation: str,
        kernel_shape: tuple[int, ...],
        logical_axes: tuple[str | None, ...],
        *,
        fan_in: int,
        rngs: nnx.Rngs,
        bias_axes: tuple[str | None, ...] | None = None,
        zero_init: bool = False,
        dtype: jnp.dtype = jnp.float32,
    ):
        if len(logical_axes) != len(kernel_shape):
            raise ValueError(
                f"logical_axes {logical_axes} must name each of the {len(kernel_shape)} kernel axes"
            )
        if zero_init:
            w = jnp.zeros(kernel_shape, jnp.float32)
        else:
            w = jax.random.normal(rngs.params(), kernel_shape) / math.sqrt(fan_in)
        self.kernel = nnx.Param(w, logical_axes=tuple(logical_axes))
        bias = None
        if bias_axes is not None:
            shape = kernel_shape[len(kernel_shape) - len(bias_axes) :]
            bias = nnx.Param(jnp.zeros(shape), logical_axes=tuple(bias_axes))
        self.bias = bias
        self.equation, self.dtype = equation, dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        y = jnp.einsum(self.equation, x.astype(self.dtype), self.kernel[...].astype(self.dtype))
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
    """Rotary position embedding of `x: [B, L, H, D]` (D even).

    Args:
      x: queries or keys `[B, L, H, D]`.
      positions: integer positions `[L]` (shared by the batch) or `[B, L]` (per example, e.g.
        restarting at 0 in each packed document).
      base: frequency base.

    Returns:
      `[B, L, H, D]` in the dtype of `x`.

    Reference: Su et al. 2021, RoFormer.
    """
    d = x.shape[-1]
    if positions.ndim not in (1, 2) or positions.shape[-1] != x.shape[1]:
        raise ValueError(
            f"positions must have shape [L] or [B, L] with L={x.shape[1]}, got {positions.shape}"
        )
    freqs = base ** (-jnp.arange(0, d // 2, dtype=jnp.float32) * 2 / d)
    angles = positions.astype(jnp.float32)[..., None] * freqs  # [(B,) L, D/2]
    angles = angles[None, :, None] if positions.ndim == 1 else angles[:, :, None]
    cos, sin = jnp.cos(angles), jnp.sin(angles)
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)
    return out.astype(x.dtype)


# Remat names that are not attributes of `jax.checkpoint_policies` taking no arguments.
_REMAT_SPECIAL = ("none", "full", "offload_dot_with_no_batch_dims", "offload_dots")
REMAT_POLICIES = (
    *_REMAT_SPECIAL,
    "dots_saveable",
    "dots_with_no_batch_dims_saveable",
    "checkpoint_dots",
    "checkpoint_dots_with_no_batch_dims",
    "nothing_saveable",
    "everything_saveable",
)


def remat_policy(name: str):
    """The `jax.checkpoint` policy of a remat name (the `model.remat` config key).

    Args:
      name: "none" (no rematerialisation), "full" (save nothing: recompute the whole block in
        the backward pass), "offload_dots" / "offload_dot_with_no_batch_dims" (weight-like
        matmul outputs offloaded to pinned host memory; GPU/TPU), or a policy of
        `jax.checkpoint_policies` that takes no arguments ("dots_saveable",
        "dots_with_no_batch_dims_saveable", "nothing_saveable", "everything_saveable", ...).

    Returns:
      None for "none" (the caller does not wrap anything in `remat`), else a policy callable
      for `jax.checkpoint` / `nnx.remat`.

    Raises:
      ValueError naming `model.remat` and the allowed values for an unknown name.
    """
    if name not in REMAT_POLICIES:
        raise ValueError(
            f"model.remat={name!r} is not allowed; allowed values: "
            f"{', '.join(map(repr, REMAT_POLICIES))}"
        )
    policies = jax.checkpoint_policies
    if name == "none":
        return None
    if name == "full":
        return policies.nothing_saveable
    if name in ("offload_dots", "offload_dot_with_no_batch_dims"):
        return policies.offload_dot_with_no_batch_dims("device", "pinned_host")
    return getattr(policies, name)
