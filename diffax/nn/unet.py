"""A small DDPM-style U-Net for images (Flax NNX), NHWC.

ResNet blocks with GroupNorm and an additive time embedding, strided-convolution downsampling,
nearest-neighbour upsampling, skip connections between mirrored levels, and optional multi-head
self-attention at chosen levels. Every parameter carries `logical_axes` metadata: convolution
kernels `[kh, kw, C_in, C_out]` use `(None, None, in_axis, out_axis)` with channel axes named like
the transformer's ("embed" for the residual stream, "mlp" inside a block), so the sharding rules
of the config apply unchanged.

Reference: Ho et al. 2020, Denoising Diffusion Probabilistic Models (appendix B); Song et al. 2021
(NCSN++/DDPM++ building blocks).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from diffax.nn.layers import Dense, remat_policy, sinusoidal_embedding


class Conv(nnx.Module):
    """2-D convolution (NHWC, "SAME" padding) with a logically-named `[kh, kw, C_in, C_out]` kernel.

    Args:
      in_channels, out_channels: channel counts.
      logical_axes: names of the (C_in, C_out) kernel axes; the spatial axes are unnamed.
      kernel_size: square kernel size.
      stride: spatial stride.
      zero_init: start from a zero kernel (last layers of residual branches and of the network).
      dtype: computation dtype; parameters stay float32.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        logical_axes: tuple[str | None, str | None],
        *,
        rngs: nnx.Rngs,
        kernel_size: int = 3,
        stride: int = 1,
        zero_init: bool = False,
        dtype: jnp.dtype = jnp.float32,
    ):
        shape = (kernel_size, kernel_size, in_channels, out_channels)
        if zero_init:
            w = jnp.zeros(shape, jnp.float32)
        else:
            w = jax.random.normal(rngs.params(), shape) / math.sqrt(kernel_size**2 * in_channels)
        self.kernel = nnx.Param(w, logical_axes=(None, None, *logical_axes))
        self.bias = nnx.Param(jnp.zeros((out_channels,)), logical_axes=(logical_axes[1],))
        self.stride, self.dtype = stride, dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        y = jax.lax.conv_general_dilated(
            x.astype(self.dtype),
            self.kernel[...].astype(self.dtype),
            window_strides=(self.stride, self.stride),
            padding="SAME",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        return y + self.bias[...].astype(self.dtype)


class GroupNorm(nnx.Module):
    """Group normalisation over (H, W, channels of a group), computed in float32, with affine.

    Wu & He 2018, Group Normalization. Uses `min(num_groups, channels)` groups.
    """

    def __init__(self, channels: int, axis: str | None, *, num_groups: int = 32, eps: float = 1e-6):
        groups = min(num_groups, channels)
        if channels % groups:
            raise ValueError(f"channels={channels} is not divisible by num_groups={groups}")
        self.groups, self.eps = groups, eps
        self.scale = nnx.Param(jnp.ones((channels,)), logical_axes=(axis,))
        self.bias = nnx.Param(jnp.zeros((channels,)), logical_axes=(axis,))

    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, c = x.shape
        g = x.astype(jnp.float32).reshape(b, h, w, self.groups, c // self.groups)
        mean = jnp.mean(g, axis=(1, 2, 4), keepdims=True)
        var = jnp.mean(jnp.square(g - mean), axis=(1, 2, 4), keepdims=True)
        g = ((g - mean) * jax.lax.rsqrt(var + self.eps)).reshape(b, h, w, c)
        return (g * self.scale[...] + self.bias[...]).astype(x.dtype)


class Attention(nnx.Module):
    """Residual multi-head self-attention over the H*W positions (zero-initialised output)."""

    def __init__(self, channels: int, num_heads: int, *, rngs, num_groups: int, dtype):
        if channels % num_heads:
            raise ValueError(f"channels={channels} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.norm = GroupNorm(channels, "embed", num_groups=num_groups)
        self.qkv = Dense(channels, 3 * channels, ("embed", "heads"), rngs=rngs, dtype=dtype)
        self.proj = Dense(
            channels, channels, ("heads", "embed"), rngs=rngs, zero_init=True, dtype=dtype
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, c = x.shape
        q, k, v = jnp.split(self.qkv(self.norm(x).reshape(b, h * w, c)), 3, axis=-1)
        heads = lambda a: a.reshape(b, h * w, self.num_heads, c // self.num_heads)
        out = jax.nn.dot_product_attention(heads(q), heads(k), heads(v)).reshape(b, h * w, c)
        return x + self.proj(out).reshape(b, h, w, c)


class ResBlock(nnx.Module):
    """`x + conv(silu(norm(conv(silu(norm(x))) + Dense(temb))))`, then optional attention.

    A 1x1 convolution maps the skip path when the channel count changes.
    """

    def __init__(self, cin, cout, temb_dim, *, rngs, num_groups, attention, num_heads, dtype):
        self.norm1 = GroupNorm(cin, "embed", num_groups=num_groups)
        self.conv1 = Conv(cin, cout, ("embed", "mlp"), rngs=rngs, dtype=dtype)
        self.temb = Dense(temb_dim, cout, ("embed", "mlp"), rngs=rngs, dtype=dtype)
        self.norm2 = GroupNorm(cout, "mlp", num_groups=num_groups)
        self.conv2 = Conv(cout, cout, ("mlp", "embed"), rngs=rngs, zero_init=True, dtype=dtype)
        self.skip = (
            Conv(cin, cout, ("embed", "embed"), rngs=rngs, kernel_size=1, dtype=dtype)
            if cin != cout
            else None
        )
        self.attn = (
            Attention(cout, num_heads, rngs=rngs, num_groups=num_groups, dtype=dtype)
            if attention
            else None
        )

    def __call__(self, x: jax.Array, temb: jax.Array) -> jax.Array:
        h = self.conv1(jax.nn.silu(self.norm1(x)))
        h = h + self.temb(temb)[:, None, None, :]
        h = self.conv2(jax.nn.silu(self.norm2(h)))
        x = (self.skip(x) if self.skip is not None else x) + h
        return self.attn(x) if self.attn is not None else x


class Downsample(nnx.Module):
    """Halves H and W with a stride-2 3x3 convolution."""

    def __init__(self, channels: int, *, rngs, dtype):
        self.conv = Conv(channels, channels, ("embed", "embed"), rngs=rngs, stride=2, dtype=dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.conv(x)


class Upsample(nnx.Module):
    """Doubles H and W (nearest neighbour), then a 3x3 convolution."""

    def __init__(self, channels: int, *, rngs, dtype):
        self.conv = Conv(channels, channels, ("embed", "embed"), rngs=rngs, dtype=dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        return self.conv(x)


class UNet(nnx.Module):
    """DDPM-style U-Net `model(x [B, H, W, C], t [B]) -> [B, H, W, C]` (float32 output).

    Args:
      channels: image channels C (input and output).
      base_channels: width of the first level.
      channel_mults: width multiplier per level; there are `len(channel_mults) - 1` halvings, so
        H and W must be divisible by `2 ** (len(channel_mults) - 1)`.
      num_res_blocks: residual blocks per level on the way down (one more on the way up).
      attention_levels: indices of the levels (0 = full resolution) with self-attention; the
        middle block always has attention when this is non-empty.
      num_heads: attention heads.
      num_groups: GroupNorm groups (at most; `min(num_groups, channels)` are used).
      rngs: `nnx.Rngs` for parameter initialisation.
      dtype: computation dtype (float32 or bfloat16); parameters and normalisation are float32.
      remat: rematerialisation of each resolution level (its down blocks, its up blocks, and the
        middle blocks) in the backward pass, a name accepted by `diffax.nn.remat_policy`
        ("none", "full", "dots_saveable", ...).

    Reference: Ho et al. 2020, Denoising Diffusion Probabilistic Models (CIFAR-10 model:
    base 128, mults (1, 2, 2, 2), 2 blocks, attention at 16x16).
    """

    def __init__(
        self,
        channels: int,
        base_channels: int = 64,
        channel_mults: tuple[int, ...] = (1, 2, 2),
        num_res_blocks: int = 2,
        attention_levels: tuple[int, ...] = (1,),
        *,
        rngs: nnx.Rngs,
        num_heads: int = 1,
        num_groups: int = 32,
        dtype: jnp.dtype = jnp.float32,
        remat: str = "none",
    ):
        remat_policy(remat)  # raises ValueError naming model.remat
        channel_mults, attention_levels = tuple(channel_mults), tuple(attention_levels)
        if not channel_mults or num_res_blocks < 1:
            raise ValueError("channel_mults must be non-empty and num_res_blocks >= 1")
        bad = [i for i in attention_levels if not 0 <= i < len(channel_mults)]
        if bad:
            raise ValueError(
                f"attention_levels {bad} out of range; levels are 0..{len(channel_mults) - 1}"
            )
        self.channels, self.base_channels, self.dtype = channels, base_channels, dtype
        self.remat = remat
        self.num_levels = len(channel_mults)
        temb_dim = 4 * base_channels
        kw = dict(rngs=rngs, dtype=dtype)
        block = lambda cin, cout, attn: ResBlock(
            cin, cout, temb_dim, num_groups=num_groups, attention=attn, num_heads=num_heads, **kw
        )
        self.t_fc1 = Dense(base_channels, temb_dim, ("embed", "mlp"), rngs=rngs)
        self.t_fc2 = Dense(temb_dim, temb_dim, ("mlp", "embed"), rngs=rngs)
        self.conv_in = Conv(channels, base_channels, (None, "embed"), **kw)

        # Layers of each resolution level, as (start, stop) ranges into `down` / `up`.
        down_levels, up_levels = [], []
        down, skips, ch = [], [base_channels], base_channels
        for level, mult in enumerate(channel_mults):
            start = len(down)
            for _ in range(num_res_blocks):
                down.append(block(ch, base_channels * mult, level in attention_levels))
                ch = base_channels * mult
                skips.append(ch)
            if level < self.num_levels - 1:
                down.append(Downsample(ch, **kw))
                skips.append(ch)
            down_levels.append((start, len(down)))
        self.down = nnx.List(down)
        self.mid1 = block(ch, ch, bool(attention_levels))
        self.mid2 = block(ch, ch, False)

        up = []
        for level, mult in reversed(list(enumerate(channel_mults))):
            start = len(up)
            for _ in range(num_res_blocks + 1):
                up.append(block(ch + skips.pop(), base_channels * mult, level in attention_levels))
                ch = base_channels * mult
            if level > 0:
                up.append(Upsample(ch, **kw))
            up_levels.append((start, len(up)))
        self.up = nnx.List(up)
        self.down_levels, self.up_levels = tuple(down_levels), tuple(up_levels)
        self.norm_out = GroupNorm(ch, "embed", num_groups=num_groups)
        self.conv_out = Conv(ch, channels, ("embed", None), zero_init=True, **kw)

    def __call__(self, x: jax.Array, t: jax.Array) -> jax.Array:
        """x: `[B, H, W, C]`; t: `[B]` or scalar in [0, 1]. Returns `[B, H, W, C]` float32."""
        if x.ndim != 4 or x.shape[-1] != self.channels:
            raise ValueError(f"x must have shape [B, H, W, {self.channels}], got {x.shape}")
        factor = 2 ** (self.num_levels - 1)
        if x.shape[1] % factor or x.shape[2] % factor:
            raise ValueError(
                f"image size {x.shape[1]}x{x.shape[2]} must be divisible by {factor} "
                f"(2 ** (len(channel_mults) - 1))"
            )
        t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), (x.shape[0],))
        temb = self.t_fc2(jax.nn.silu(self.t_fc1(sinusoidal_embedding(t, self.base_channels))))
        temb = jax.nn.silu(temb).astype(self.dtype)
        policy = remat_policy(self.remat)
        down_level, middle, up_level = (
            _checkpointed(f, policy) for f in (_down_level, _middle, _up_level)
        )
        h = self.conv_in(x)
        hs = [h]
        for start, stop in self.down_levels:
            outs = down_level(tuple(self.down[start:stop]), h, temb)
            hs.extend(outs)
            h = outs[-1]
        h = middle(self.mid1, self.mid2, h, temb)
        for start, stop in self.up_levels:
            layers = tuple(self.up[start:stop])
            num_skips = sum(isinstance(layer, ResBlock) for layer in layers)
            skips = tuple(hs.pop() for _ in range(num_skips))
            h = up_level(layers, h, skips, temb)
        return self.conv_out(jax.nn.silu(self.norm_out(h))).astype(jnp.float32)


def _checkpointed(fn, policy):
    """`fn(modules, *arrays)` under `jax.checkpoint(policy)` (unchanged when policy is None).

    The modules travel as pure state (split outside, merged inside) rather than through
    `nnx.remat`, so a U-Net built outside a `lax` loop (a sampler) still runs inside it.
    """
    if policy is None:
        return fn

    def call(modules, *args):
        graphdef, state = nnx.split(modules)
        pure = lambda state, *args: fn(nnx.merge(graphdef, state), *args)
        return jax.checkpoint(pure, policy=policy)(state, *args)

    return call


def _down_level(layers, h, temb):
    """Runs one level on the way down; returns every layer's output (the skip connections)."""
    outs = []
    for layer in layers:
        h = layer(h, temb) if isinstance(layer, ResBlock) else layer(h)
        outs.append(h)
    return outs


def _middle(mid1, mid2, h, temb):
    return mid2(mid1(h, temb), temb)


def _up_level(layers, h, skips, temb):
    """Runs one level on the way up; `skips` in the order the ResBlocks consume them."""
    skips = list(skips)
    for layer in layers:
        if isinstance(layer, ResBlock):
            h = layer(jnp.concatenate([h, skips.pop(0)], axis=-1), temb)
        else:
            h = layer(h)
    return h
