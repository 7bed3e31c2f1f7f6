"""A residual MLP with Fourier time features, for low-dimensional (toy) continuous data (Flax NNX).

The time t in [0, 1] enters through sinusoidal features (`sinusoidal_embedding`, the DDPM timestep
embedding) followed by a learned projection that is added inside every residual block.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from diffax.nn.layers import Dense, layer_norm, sinusoidal_embedding


class MLPBlock(nnx.Module):
    """Pre-norm residual block `h + W2 silu(W1 norm(h) + Wt c)` with a time condition `c`."""

    def __init__(self, width: int, hidden: int, cond_dim: int, *, rngs: nnx.Rngs, dtype):
        self.fc1 = Dense(width, hidden, ("embed", "mlp"), rngs=rngs, dtype=dtype)
        self.cond = Dense(cond_dim, hidden, ("embed", "mlp"), rngs=rngs, dtype=dtype)
        self.fc2 = Dense(hidden, width, ("mlp", "embed"), rngs=rngs, dtype=dtype)

    def __call__(self, h: jax.Array, c: jax.Array) -> jax.Array:
        return h + self.fc2(jax.nn.silu(self.fc1(layer_norm(h)) + self.cond(c)))


class TimeMLP(nnx.Module):
    """Residual MLP `model(x [B, D], t [B]) -> [B, D]` conditioned on t by Fourier features.

    Args:
      dim: data dimension D (input and output).
      width: residual-stream width.
      depth: number of residual blocks.
      rngs: `nnx.Rngs` for parameter initialisation.
      hidden: hidden width inside a block (default `2 * width`).
      time_features: number of sinusoidal time features (even).
      zero_init_output: start with a zero output layer (the network initially predicts 0).
      dtype: computation dtype; parameters are float32, the output is float32.

    Reference: Tancik et al. 2020, Fourier Features Let Networks Learn High Frequency Functions;
    Ho et al. 2020 (sinusoidal timestep embedding).
    """

    def __init__(
        self,
        dim: int,
        width: int = 128,
        depth: int = 3,
        *,
        rngs: nnx.Rngs,
        hidden: int | None = None,
        time_features: int = 64,
        zero_init_output: bool = True,
        dtype: jnp.dtype = jnp.float32,
    ):
        if dim < 1 or width < 1 or depth < 0:
            raise ValueError(f"need dim >= 1, width >= 1, depth >= 0; got {dim}, {width}, {depth}")
        if time_features < 2 or time_features % 2:
            raise ValueError(f"time_features must be an even number >= 2, got {time_features}")
        hidden = hidden or 2 * width
        self.dim, self.time_features, self.dtype = dim, time_features, dtype
        self.t_fc1 = Dense(time_features, width, (None, "embed"), rngs=rngs)
        self.t_fc2 = Dense(width, width, ("embed", "embed"), rngs=rngs)
        self.inp = Dense(dim, width, (None, "embed"), rngs=rngs, dtype=dtype)
        self.blocks = nnx.List(
            [MLPBlock(width, hidden, width, rngs=rngs, dtype=dtype) for _ in range(depth)]
        )
        self.out = Dense(
            width, dim, ("embed", None), rngs=rngs, zero_init=zero_init_output, dtype=dtype
        )

    def __call__(self, x: jax.Array, t: jax.Array) -> jax.Array:
        """x: `[B, D]`; t: `[B]` or scalar in [0, 1]. Returns `[B, D]` float32."""
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape [B, {self.dim}], got {x.shape}")
        t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), (x.shape[0],))
        c = self.t_fc2(jax.nn.silu(self.t_fc1(sinusoidal_embedding(t, self.time_features))))
        c = jax.nn.silu(c).astype(self.dtype)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, c)
        return self.out(jax.nn.silu(h)).astype(jnp.float32)
