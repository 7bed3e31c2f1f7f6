"""The sampler registry, the shared signature and the default time grid.

Every sampler has the signature
`sampler(key, process, model_fn, shape, *, num_steps, prediction="denoiser", temperature=1.0,
top_p=1.0, cache=False, fixed_tokens=None, fixed_mask=None, **specific) -> (tokens, info)`
where `model_fn(tokens [B, L] int32, t [B]) -> [B, L, V]` and `info["nfe"]` (int32) counts the
network evaluations actually made.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from diffax.core import Registry

samplers: Registry = Registry("sampler")


def time_grid(num_steps: int) -> jax.Array:
    """`num_steps + 1` decreasing times 1 = t_0 > ... > t_N = 0. Returns float32 `[N + 1]`.

    Samplers take the step t_i -> t_{i+1} with their own rule for i < N - 1; the last step
    (to t = 0, where reverse rates diverge) draws x_0 from the denoiser.
    """
    return jnp.linspace(1.0, 0.0, num_steps + 1, dtype=jnp.float32)
