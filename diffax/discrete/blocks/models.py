"""What the block samplers call: models with a key/value cache, as plain callables.

Two protocols, both NamedTuples of pure functions (the math layer never sees a network object;
`diffax.nn.block_models` builds them from a `DiffusionTransformer`):

* `BlockModel`: a block-causal model (BD3-LM). Blocks of the clean prefix are appended to a cache
  once; the block being generated attends to the cache and to itself. Exact: a block's output
  depends only on the blocks before it, so cached and uncached decoding agree.
* `CachedModel`: a full-attention masked model (LLaDA / MDLM) decoded in semi-autoregressive
  blocks with an approximate cache (Fast-dLLM): one full forward (`refresh`) stores the keys and
  values of every position; later calls recompute only a window of positions and reuse the
  stale cached keys/values elsewhere.

`uncached_block_model` and `full_cached_model` build both protocols from an ordinary
`model_fn(tokens [B, L], t) -> [B, L, V]` by rerunning the whole sequence on every call: the exact
references the cached versions are compared with (and what "no cache" costs).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from diffax.core import check_positive_int


class BlockModel(NamedTuple):
    """A block-causal denoiser with a cache of the clean prefix (see the module docstring).

    Attributes:
      init: `init(batch: int, length: int) -> cache`, an empty cache for sequences of `length`.
      denoise: `denoise(cache, x_block [B, K] int32, t [B] float32, start int32 scalar) ->
        logits [B, K, V] float32`: the denoiser log p(x_0 | x_block, clean tokens before
        `start`) for the block at positions `[start, start + K)`. Does not change the cache.
      append: `append(cache, x_block [B, K] int32, start) -> cache`: the clean block at
        `[start, start + K)` added to the cache (its keys/values computed at t = 0).
      cached: True when `denoise` costs K token evaluations and `append` K more (a KV cache);
        False when every call reruns all L positions (the reference). Only for accounting.
    """

    init: Callable[[int, int], Any]
    denoise: Callable[[Any, jax.Array, jax.Array, jax.Array], jax.Array]
    append: Callable[[Any, jax.Array, jax.Array], Any]
    cached: bool = True


class CachedModel(NamedTuple):
    """A full-attention denoiser with an approximate key/value cache (Fast-dLLM).

    Attributes:
      refresh: `refresh(x [B, L] int32, t [B]) -> (logits [B, L, V] float32, cache)`: one full
        forward pass; the cache holds the keys/values of every position (per layer).
      window: `window(cache, x_window [B, W] int32, t [B], start int32 scalar) -> logits
        [B, W, V]`: recomputes positions `[start, start + W)` only; their queries attend to all
        L positions, using the window's fresh keys/values inside the window and the cached
        ones elsewhere. Does not change the cache.
      cached: False for `full_cached_model` (exact, every call a full forward); accounting only.
    """

    refresh: Callable[[jax.Array, jax.Array], tuple[jax.Array, Any]]
    window: Callable[[Any, jax.Array, jax.Array, jax.Array], jax.Array]
    cached: bool = True


def _batch_time(t: jax.Array, batch: int) -> jax.Array:
    return jnp.broadcast_to(jnp.asarray(t, jnp.float32), (batch,))


def uncached_block_model(model_fn: Callable, mask_id: int) -> BlockModel:
    """A `BlockModel` that reruns `model_fn` on the whole sequence at every call (no cache).

    The "cache" is the token sequence itself: the clean prefix, then `mask_id` everywhere not yet
    generated. `denoise` writes the block at `start` and returns the block's rows of
    `model_fn(tokens, t_tokens)`, where `t_tokens` `[B, L]` is 0 on the clean prefix and t from
    `start` on. With a block-causal network (attention to blocks <= b only) the masks after the
    block are never seen; with an exact enumerated denoiser they are marginalised, which is the
    same conditional.

    Args:
      model_fn: `(tokens [B, L] int32, t [B, L] float32) -> logits [B, L, V]`, per-token times
        (an `EnumeratedTarget.denoiser` or any `(tokens, t [B])` model that broadcasts: see
        `per_token_time`).
      mask_id: the mask token id (`process.mask_id`).

    Returns:
      a `BlockModel` with `cached=False`.
    """

    def init(batch: int, length: int):
        return jnp.full((batch, length), mask_id, jnp.int32)

    def denoise(tokens, x_block, t, start):
        batch, length = tokens.shape
        full = jax.lax.dynamic_update_slice(tokens, x_block.astype(jnp.int32), (0, start))
        t_tok = jnp.where(jnp.arange(length)[None, :] >= start, _batch_time(t, batch)[:, None], 0.0)
        logits = model_fn(full, t_tok)
        return jax.lax.dynamic_slice_in_dim(logits, start, x_block.shape[1], axis=1)

    def append(tokens, x_block, start):
        return jax.lax.dynamic_update_slice(tokens, x_block.astype(jnp.int32), (0, start))

    return BlockModel(init=init, denoise=denoise, append=append, cached=False)


def full_cached_model(model_fn: Callable) -> CachedModel:
    """A `CachedModel` without a cache: every call is a full forward of the current sequence.

    Exact (no stale keys/values), so semi-autoregressive decoding with it equals decoding the
    same blocks with the plain sampler; the reference for the approximate caches.

    Args:
      model_fn: `(tokens [B, L] int32, t [B]) -> logits [B, L, V]`.

    Returns:
      a `CachedModel` with `cached=False`; its cache is the token sequence of the last refresh.
    """

    def refresh(x, t):
        return model_fn(x, _batch_time(t, x.shape[0])), x

    def window(tokens, x_window, t, start):
        full = jax.lax.dynamic_update_slice(tokens, x_window.astype(jnp.int32), (0, start))
        logits = model_fn(full, _batch_time(t, tokens.shape[0]))
        return jax.lax.dynamic_slice_in_dim(logits, start, x_window.shape[1], axis=1)

    return CachedModel(refresh=refresh, window=window, cached=False)


def per_token_time(model_fn: Callable) -> Callable:
    """Adapts `model_fn(tokens, t [B])` to per-token times `[B, L]` by using each row's maximum.

    For models that ignore t (time-free denoisers, exact enumerated denoisers of an absorbing
    process) this is exact; a time-conditioned network needs real per-token conditioning.
    """

    def fn(tokens, t):
        t = jnp.asarray(t, jnp.float32)
        return model_fn(tokens, jnp.max(t, axis=-1) if t.ndim == 2 else t)

    return fn


def per_block_two_stream(
    model_fn: Callable, block_size: int, *, mask_id: int | None = None
) -> Callable:
    """A two-stream model for `block_masked_elbo` from a block-causal `model_fn`, one call a block.

    For block b it runs `model_fn` on `[x_0 blocks < b, x_t block b, blocks > b]` with per-token
    times (0 on the clean prefix, t_b from block b on) and keeps block b's rows. The blocks after
    b hold x_t, or `mask_id` when given. With a block-causal network the rows of block b see
    exactly what the two-stream pass with the block-diffusion mask lets them see (later blocks
    are invisible), so this is the reference the one-pass two-stream model is tested against.
    With an exact enumerated denoiser (which sees every position) and `mask_id`, the later
    blocks are marginalised: the exact block-conditional denoiser. L / block_size network calls.

    Args:
      model_fn: `(tokens [B, L] int32, t [B, L] float32) -> logits [B, L, V]`.
      block_size: K, dividing L.
      mask_id: fill for the blocks after b (None: keep x_t there).

    Returns:
      `fn(tokens [B, 2L] int32 = concat([x_t, x_0], 1), t [B, L // K]) -> logits [B, L, V]`.
    """
    block_size = check_positive_int(block_size, "block_size")

    def fn(tokens, t):
        length = tokens.shape[1] // 2
        if length % block_size:
            raise ValueError(f"block_size={block_size} must divide the sequence length {length}")
        x_t, x_0 = tokens[:, :length], tokens[:, length:]
        pos_block = jnp.arange(length) // block_size
        rows = []
        for b in range(length // block_size):
            tokens_b = jnp.where(pos_block[None, :] < b, x_0, x_t)
            if mask_id is not None:
                tokens_b = jnp.where(pos_block[None, :] > b, mask_id, tokens_b)
            t_b = jnp.where(pos_block[None, :] < b, 0.0, t[:, b : b + 1])
            rows.append(model_fn(tokens_b, t_b)[:, b * block_size : (b + 1) * block_size])
        return jnp.concatenate(rows, axis=1)

    return fn
