"""Block diffusion and cached decoding protocols built from a `DiffusionTransformer`.

The math layer (`diffax.discrete.blocks`) takes plain callables; these adapters make them from
the Flax transformer:

* `two_stream_fn`: the one-pass two-stream model of `block_masked_elbo` (BD3-LM training;
  Arriola et al. 2025, Block Diffusion: Interpolating Between Autoregressive and Diffusion
  Language Models);
* `bd3_block_model`: a `BlockModel` with an exact key/value cache of the clean prefix (a network
  trained with block-causal attention);
* `fast_dllm_model`: a `CachedModel` whose cache is refreshed by a full forward and reused, stale,
  by windows of full-attention queries (Wu et al. 2025, Fast-dLLM: Training-free Acceleration of
  Diffusion LLM by Enabling KV Cache and Parallel Decoding).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from diffax.core import LinearHead
from diffax.discrete.blocks.models import BlockModel, CachedModel
from diffax.nn.attention import MaskSpec
from diffax.nn.transformer import DiffusionTransformer


def _check_model(model) -> None:
    if not isinstance(model, DiffusionTransformer):
        raise TypeError(f"model must be a DiffusionTransformer, got {type(model).__name__}")


def _check_block_size(block_size) -> int:
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be an integer >= 1, got {block_size!r}")
    return block_size


def two_stream_fn(
    model: DiffusionTransformer, block_size: int, *, head: bool = False, chunk_size: int = 8192
) -> Callable:
    """The two-stream denoiser of `block_masked_elbo`, one network pass over `[x_t ; x_0]`.

    The 2L tokens run with rotary positions `concat(arange L, arange L)` under
    `MaskSpec("block_diffusion", block_size)` (a noisy token of block b sees the noisy block b
    and the clean blocks < b; a clean token sees the clean blocks <= its own) and per-token times:
    block b's time on the noisy half, 0 on the clean half. Equal to running a block-causal
    network once per block on `[x_0 blocks < b, x_t block b]` (`per_block_two_stream`).

    Args:
      model: a `DiffusionTransformer` (its `max_len` bounds L, not 2L).
      block_size: K, dividing L.
      head: return a `LinearHead` (hidden states and the output projection; the loss runs its
        cross-entropy in vocab chunks) instead of logits.
      chunk_size: the `LinearHead`'s vocabulary chunk (with `head=True`).

    Returns:
      `fn(tokens [B, 2L] int32, t [B, L // K] per-block times (or [B] / scalar: one time per
      row)) -> logits [B, L, V] float32` of the noisy rows, or a `LinearHead` whose hidden is
      `[B, L, dim]`.
    """
    _check_model(model)
    block_size = _check_block_size(block_size)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
    mask = MaskSpec("block_diffusion", block_size)

    def fn(tokens: jax.Array, t: jax.Array):
        if tokens.ndim != 2 or tokens.shape[1] % 2:
            raise ValueError(
                f"tokens must be the two-stream [B, 2L] = concat([x_t, x_0], 1), got {tokens.shape}"
            )
        batch, length = tokens.shape[0], tokens.shape[1] // 2
        if length % block_size:
            raise ValueError(f"block_size={block_size} must divide the sequence length {length}")
        num_blocks = length // block_size
        t = jnp.asarray(t, jnp.float32)
        if t.ndim <= 1:
            t = jnp.broadcast_to(t.reshape(-1, 1) if t.ndim else t, (batch, num_blocks))
        if t.shape != (batch, num_blocks):
            raise ValueError(
                f"t must have shape [B, L // block_size] = ({batch}, {num_blocks}), [B] or (), "
                f"got {t.shape}"
            )
        t_tokens = jnp.concatenate(
            [jnp.repeat(t, block_size, axis=1), jnp.zeros((batch, length), jnp.float32)], axis=1
        )
        positions = jnp.tile(jnp.arange(length, dtype=jnp.int32), 2)
        hidden = model.features(tokens, t_tokens, positions=positions, mask=mask)[:, :length]
        kernel, bias = model.head_weights()
        out = LinearHead(hidden, kernel, bias, chunk_size=chunk_size)
        if head:
            return out
        logits = jnp.dot(hidden, kernel, preferred_element_type=jnp.float32)
        if bias is not None:
            logits = logits + bias.astype(jnp.float32)
        return logits[..., : model.num_classes]

    return fn


def bd3_block_model(model: DiffusionTransformer, block_size: int) -> BlockModel:
    """A `BlockModel` with an exact key/value cache, for a network trained block-causally.

    `init` is `model.init_cache`; `denoise` runs the block's K queries at time t against the
    cached clean prefix and the block itself (the cache is not kept); `append` runs the clean
    block at t = 0 and keeps its keys/values. Every query sees the keys of its own block and the
    blocks before it, so the logits equal those of `model(x, t, mask=MaskSpec("block_causal",
    K))` with the clean prefix at t = 0 (Arriola et al. 2025). Cost: K token evaluations per
    call instead of L.

    Args:
      model: a `DiffusionTransformer`.
      block_size: K; `append` may take several whole blocks at once (a prompt), `denoise` one.

    Returns:
      a `BlockModel` (cached=True) whose cache is a `KVCache`.
    """
    _check_model(model)
    block_size = _check_block_size(block_size)

    def block_ends(start, width):
        # Query i sits in the block of position start + i and sees the keys up to its end.
        pos = jnp.asarray(start, jnp.int32) + jnp.arange(width, dtype=jnp.int32)
        return (pos // block_size + 1) * block_size

    def init(batch: int, length: int):
        if length % block_size:
            raise ValueError(f"block_size={block_size} must divide the sequence length {length}")
        return model.init_cache(batch, length)

    def denoise(cache, x_block, t, start):
        width = x_block.shape[1]
        logits, _ = model.forward_cached(x_block, t, cache, start, limit=block_ends(start, width))
        return logits

    def append(cache, x_block, start):
        width = x_block.shape[1]
        zeros = jnp.zeros((x_block.shape[0],), jnp.float32)
        _, cache = model.forward_cached(
            x_block, zeros, cache, start, limit=block_ends(start, width)
        )
        return cache

    return BlockModel(init=init, denoise=denoise, append=append, cached=True)


def fast_dllm_model(model: DiffusionTransformer) -> CachedModel:
    """A `CachedModel` with Fast-dLLM's approximate cache of a full-attention model.

    `refresh` is one full forward that stores every position's keys/values; `window` recomputes
    the positions `[start, start + W)` with full attention over all L positions, fresh inside the
    window and stale (from the last refresh) elsewhere (Wu et al. 2025). Exact when nothing
    outside the window changed since the refresh.

    Args:
      model: a `DiffusionTransformer` trained with full attention.

    Returns:
      a `CachedModel` (cached=True) whose cache is a `KVCache`.
    """
    _check_model(model)

    def refresh(x, t):
        cache = model.init_cache(x.shape[0], x.shape[1])
        return model.forward_cached(x, t, cache, 0)

    def window(cache, x_window, t, start):
        logits, _ = model.forward_cached(x_window, t, cache, start)
        return logits

    return CachedModel(refresh=refresh, window=window, cached=True)
