"""A DiT-style bidirectional transformer for token diffusion (Flax NNX).

Time enters through adaptive layer norm with zero-initialised gates (adaLN-zero; Peebles & Xie
2023, "Scalable Diffusion Models with Transformers"); positions through rotary embeddings. With
`time_conditioning=False` the network ignores t (a time-free denoiser, valid for the masked
process; Zheng et al. 2024, Ou et al. 2024).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from diffax.nn.layers import (
    Dense,
    Embed,
    constrain_batch,
    layer_norm,
    rotary,
    sinusoidal_embedding,
)


def _modulate(x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
    return x * (1.0 + scale[:, None]) + shift[:, None]


class Block(nnx.Module):
    """Pre-norm attention + MLP block with adaLN-zero modulation from a condition `c: [B, C]`."""

    def __init__(self, dim, num_heads, mlp_ratio, cond_dim, *, rngs, dtype):
        self.num_heads = num_heads
        self.qkv = Dense(dim, 3 * dim, ("embed", "heads"), rngs=rngs, use_bias=False, dtype=dtype)
        self.proj = Dense(dim, dim, ("heads", "embed"), rngs=rngs, dtype=dtype)
        hidden = int(dim * mlp_ratio)
        self.fc1 = Dense(dim, hidden, ("embed", "mlp"), rngs=rngs, dtype=dtype)
        self.fc2 = Dense(hidden, dim, ("mlp", "embed"), rngs=rngs, dtype=dtype)
        self.ada = Dense(
            cond_dim, 6 * dim, ("embed", "mlp"), rngs=rngs, zero_init=True, dtype=dtype
        )

    def __call__(self, x: jax.Array, c: jax.Array, positions: jax.Array) -> jax.Array:
        b, length, dim = x.shape
        shift1, scale1, gate1, shift2, scale2, gate2 = jnp.split(self.ada(c), 6, axis=-1)
        h = _modulate(layer_norm(x), shift1, scale1)
        q, k, v = jnp.split(self.qkv(h), 3, axis=-1)
        heads = lambda a: a.reshape(b, length, self.num_heads, dim // self.num_heads)
        q, k, v = rotary(heads(q), positions), rotary(heads(k), positions), heads(v)
        attn = jax.nn.dot_product_attention(q, k, v).reshape(b, length, dim)
        x = x + gate1[:, None] * self.proj(attn)
        h = _modulate(layer_norm(x), shift2, scale2)
        h = self.fc2(jax.nn.gelu(self.fc1(h)))
        return x + gate2[:, None] * h


class DiffusionTransformer(nnx.Module):
    """Bidirectional transformer mapping noisy tokens and time to per-position logits.

    Args:
      num_input_ids: ids the network reads (V + 1 for the masked process: the mask is V).
      num_classes: classes it predicts (V).
      max_len: longest sequence (kept for shape checks; rotary positions need no table).
      dim: model width; depth: number of blocks; num_heads: attention heads (dim % heads == 0).
      mlp_ratio: MLP hidden width / dim.
      time_conditioning: if False, t is ignored (time-free denoiser).
      dtype: computation dtype (float32 or bfloat16); parameters are float32.
      rngs: `nnx.Rngs` for parameter initialisation.

    Call: `model(tokens [B, L] int32, t [B] float) -> logits [B, L, num_classes] float32`.
    """

    def __init__(
        self,
        num_input_ids: int,
        num_classes: int,
        max_len: int,
        dim: int,
        depth: int,
        num_heads: int,
        *,
        rngs: nnx.Rngs,
        mlp_ratio: float = 4.0,
        time_conditioning: bool = True,
        dtype: jnp.dtype = jnp.float32,
    ):
        if dim % num_heads or (dim // num_heads) % 2:
            raise ValueError(
                f"dim={dim} must be divisible by num_heads={num_heads} with an even head size"
            )
        self.num_input_ids, self.num_classes, self.max_len = num_input_ids, num_classes, max_len
        self.dim, self.time_conditioning, self.dtype = dim, time_conditioning, dtype
        self.embed = Embed(num_input_ids, dim, rngs=rngs, dtype=dtype)
        self.t_fc1 = Dense(dim, dim, ("embed", "mlp"), rngs=rngs)
        self.t_fc2 = Dense(dim, dim, ("mlp", "embed"), rngs=rngs)
        self.blocks = nnx.List(
            [Block(dim, num_heads, mlp_ratio, dim, rngs=rngs, dtype=dtype) for _ in range(depth)]
        )
        self.final_ada = Dense(
            dim, 2 * dim, ("embed", "mlp"), rngs=rngs, zero_init=True, dtype=dtype
        )
        self.head = Dense(
            dim, num_classes, ("embed", "vocab"), rngs=rngs, zero_init=True, dtype=dtype
        )

    def __call__(self, tokens: jax.Array, t: jax.Array) -> jax.Array:
        if tokens.ndim != 2:
            raise ValueError(f"tokens must have shape [B, L], got {tokens.shape}")
        if tokens.shape[1] > self.max_len:
            raise ValueError(f"sequence length {tokens.shape[1]} exceeds max_len={self.max_len}")
        b, length = tokens.shape
        x = self.embed(tokens)
        t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), (b,))
        if not self.time_conditioning:
            t = jnp.zeros_like(t)
        c = self.t_fc2(jax.nn.silu(self.t_fc1(sinusoidal_embedding(t, self.dim))))
        c = jax.nn.silu(c).astype(self.dtype)
        positions = jnp.arange(length)
        for block in self.blocks:
            x = block(constrain_batch(x), c, positions)
        shift, scale = jnp.split(self.final_ada(c), 2, axis=-1)
        return self.head(_modulate(layer_norm(x), shift, scale)).astype(jnp.float32)
