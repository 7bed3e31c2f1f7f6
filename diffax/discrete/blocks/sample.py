"""Block-by-block generation with a block-causal model: BD3-LM decoding with a KV cache.

`block_sample` generates the blocks of a sequence left to right. Block b starts fully masked (up
to prompt tokens) and is denoised by any masked sampler `Step` on the `[B, K]` block, the network
seeing the clean blocks before it through the model's cache (`BlockModel.denoise`); the finished
block is then appended to the cache (`BlockModel.append`) and the next block starts. A block made
only of prompt tokens is appended without denoising (prefill). With `eos_id`, a sequence is
finished at its first generated EOS (later positions are filled with `eos_id`) and the loop stops
once every sequence is finished: any-length generation up to `shape[1]` tokens.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from diffax.core import check_positive_int, is_concrete
from diffax.core.registry import factory_options
from diffax.core.validation import check_options
from diffax.discrete.blocks.loss import check_block_size
from diffax.discrete.blocks.models import BlockModel
from diffax.discrete.categorical import INVALID_TOKEN
from diffax.discrete.processes import Process
from diffax.discrete.samplers.grids import GRIDS
from diffax.discrete.samplers.loop import check_fixed, check_sample_shape, run_steps
from diffax.discrete.samplers.registry import SAMPLERS
from diffax.discrete.samplers.step import Step


def build_step(sampler: str | Step, options: dict[str, Any]) -> Step:
    """The `Step` for `sampler` (a registered name built with `options`, or a `Step` as is)."""
    if isinstance(sampler, Step):
        check_options(options, (), f"sampler {sampler.name!r} (a Step object)")
        return sampler
    factory = SAMPLERS.get(sampler, "sampler")
    check_options(options, factory_options(factory), f"sampler {sampler!r}")
    return factory(**options)


def prompt_arrays(process: Process, shape, fixed_tokens, fixed_mask):
    """`(tokens [B, L] int32, mask [B, L] bool)` of the given positions (none when both None).

    Checked as `run_steps` checks its infilling arguments (`check_fixed`).
    """
    fixed = check_fixed(process, shape, fixed_tokens, fixed_mask)
    if fixed is None:
        return jnp.zeros(shape, jnp.int32), jnp.zeros(shape, jnp.bool_)
    return fixed


def check_block_arguments(
    name: str, model, model_type: type, process: Process, shape, block_size, steps_per_block
) -> tuple[int, int, int, int]:
    """The checks `block_sample` and `semi_ar_sample` share; returns `(B, L, K, steps)`.

    Args:
      name: the calling function, for messages. model / model_type: the model and the protocol
        it must be (`BlockModel` or `CachedModel`). process, shape, block_size,
        steps_per_block: as the callers take them.
    """
    if not isinstance(model, model_type):
        raise TypeError(
            f"{name} needs a diffax.discrete.{model_type.__name__}, got {type(model).__name__}"
        )
    if process.mask_id is None:
        raise TypeError(
            f"{name} needs an absorbing process (mask_id not None, e.g. Masked), got "
            f"{type(process).__name__}"
        )
    batch, length = check_sample_shape(shape)
    k = check_block_size(block_size, length)
    return batch, length, k, check_positive_int(steps_per_block, "steps_per_block")


def first_eos(tokens, generated, eos_id: int | None):
    """`(found [B], index [B])`: whether `[B, K]` tokens hold a generated EOS, and the first."""
    if eos_id is None:
        return jnp.zeros(tokens.shape[:1], jnp.bool_), jnp.zeros(tokens.shape[:1], jnp.int32)
    is_eos = (tokens == eos_id) & generated
    return jnp.any(is_eos, axis=-1), jnp.argmax(is_eos, axis=-1).astype(jnp.int32)


def check_eos(eos_id, vocab_size: int) -> int | None:
    """`eos_id` as an int in [0, V) or None; a `ValueError` naming `eos_id` otherwise."""
    if eos_id is None:
        return None
    if not isinstance(eos_id, int | np.integer) or not 0 <= int(eos_id) < vocab_size:
        raise ValueError(f"eos_id must be None or a token id in [0, {vocab_size}), got {eos_id!r}")
    return int(eos_id)


def block_sample(
    key: jax.Array,
    process: Process,
    block_model: BlockModel,
    shape: tuple[int, ...],
    *,
    block_size: int,
    steps_per_block: int,
    sampler: str | Step = "ancestral",
    fixed_tokens: jax.Array | None = None,
    fixed_mask: jax.Array | None = None,
    eos_id: int | None = None,
    temperature: float = 1.0,
    top_p: float = 1.0,
    **sampler_options: Any,
) -> tuple[jax.Array, dict[str, Any]]:
    """Generates `shape` tokens block by block with a block-causal model (BD3-LM decoding).

    Block b (positions `[bK, (b + 1)K)`) is drawn by `sampler` over `steps_per_block` grid
    intervals (the sampler's default grid, as in `sample`; `first_hitting` takes one interval
    per token) with the model `lambda x_block, t: block_model.denoise(cache, x_block, t, bK)`,
    then appended to the cache. The key of block b is `fold_in(key, b)`, so a cached and an
    uncached `BlockModel` of the same network draw the same tokens. Everything runs on device
    under `lax.while_loop` (over blocks) and `lax.scan` (over steps).

    Args:
      key: PRNG key.
      process: an absorbing process (`mask_id` not None), the one the model was trained on.
      block_model: a `BlockModel` (`diffax.nn.block_models.bd3_block_model(model, K)` for a
        transformer with a KV cache; `uncached_block_model(model_fn, mask_id)` reruns the whole
        sequence).
      shape: `(B, L)`; L is the maximum length (a multiple of block_size).
      block_size: K, dividing L.
      steps_per_block: grid intervals per block (>= 1).
      sampler: a masked sampler name ("ancestral", "first_hitting", "confidence", "remdm", ...)
        built with `sampler_options`, or a `Step`.
      fixed_tokens, fixed_mask: `[B, L]` prompt / infilling tokens kept fixed (both or neither);
        blocks made only of fixed tokens are appended without denoising (prefill).
      eos_id: stop each sequence at its first generated `eos_id` (prompt tokens do not count)
        and the loop once every sequence has stopped; positions after it hold `eos_id`. None:
        always L tokens.
      temperature, top_p: applied to the denoiser (see `Model`).
      **sampler_options: keywords of the sampler's factory (e.g. `eta` for "remdm").

    Returns:
      `(tokens [B, L] int32, info)`: info["nfe"] network calls (denoising calls actually made,
      plus one append per finished block for a cached model), info["token_evals"] positions
      processed per sequence (K per cached call, L per uncached call), info["lengths"] `[B]`
      int32 tokens up to and including the first generated EOS (L without one), and
      info["num_blocks"] the blocks generated. A non-finite model output is a `ValueError` in
      an eager call and `INVALID_TOKEN` (-1) under `jit`.

    Reference: Arriola et al. 2025 (BD3-LM), sec. 3.2, sampling with a KV cache.
    """
    batch, length, k, steps_per_block = check_block_arguments(
        "block_sample", block_model, BlockModel, process, shape, block_size, steps_per_block
    )
    eos_id = check_eos(eos_id, process.vocab_size)
    step = build_step(sampler, sampler_options)
    ts = GRIDS.get(step.grid, f"grid of sampler {step.name!r}")(steps_per_block, (batch, k))
    prompt, prompt_mask = prompt_arrays(process, (batch, length), fixed_tokens, fixed_mask)
    num_blocks = length // k
    call_tokens = k if block_model.cached else length
    append_cost = (1, k) if block_model.cached else (0, 0)

    def body(carry):
        b, tokens, cache, nfe, evals, done, lengths = carry
        start = b * k
        fixed_b = jax.lax.dynamic_slice_in_dim(prompt, start, k, axis=1)
        mask_b = jax.lax.dynamic_slice_in_dim(prompt_mask, start, k, axis=1)

        def generate(cache):
            model_fn = lambda x, t: block_model.denoise(cache, x, t, start)
            x, info = run_steps(
                jax.random.fold_in(key, b),
                step,
                process,
                model_fn,
                (batch, k),
                ts,
                temperature=temperature,
                top_p=top_p,
                fixed_tokens=fixed_b,
                fixed_mask=mask_b,
            )
            return x, info["nfe"]

        x, calls = jax.lax.cond(
            jnp.all(mask_b), lambda cache: (fixed_b, jnp.zeros((), jnp.int32)), generate, cache
        )
        found, index = first_eos(x, ~mask_b, eos_id)
        position = jnp.arange(k)[None, :]
        # Rows finished before this block are padding; a row finishing here keeps its EOS.
        pad = done[:, None] | (found[:, None] & (position > index[:, None]))
        if eos_id is not None:
            x = jnp.where(pad, eos_id, x)
        lengths = jnp.where(~done & found, start + index + 1, lengths)
        done = done | found
        tokens = jax.lax.dynamic_update_slice(tokens, x.astype(jnp.int32), (0, start))
        cache = block_model.append(cache, x, start)
        nfe = nfe + calls + append_cost[0]
        evals = evals + calls * call_tokens + append_cost[1]
        return b + 1, tokens, cache, nfe, evals, done, lengths

    def cond(carry):
        b, *_, done, _ = carry
        return (b < num_blocks) & ~jnp.all(done)

    init = (
        jnp.zeros((), jnp.int32),
        jnp.full((batch, length), process.mask_id, jnp.int32),
        block_model.init(batch, length),
        jnp.zeros((), jnp.int32),
        jnp.zeros((), jnp.int32),
        jnp.zeros((batch,), jnp.bool_),
        jnp.full((batch,), length, jnp.int32),
    )
    blocks, tokens, _, nfe, evals, _, lengths = jax.lax.while_loop(cond, body, init)
    if eos_id is not None:
        tokens = jnp.where(jnp.arange(length)[None, :] < lengths[:, None], tokens, eos_id)
    if is_concrete(tokens) and bool(jnp.any(tokens < 0)):
        b, pos = (int(i[0]) for i in np.nonzero(np.asarray(tokens) < 0))
        raise ValueError(
            f"block_sample: the model output was not finite; {int(jnp.sum(tokens < 0))} tokens "
            f"are invalid (first: sequence {b}, position {pos}). Under jit such positions are "
            f"returned as {INVALID_TOKEN}."
        )
    info = {"nfe": nfe, "token_evals": evals, "lengths": lengths, "num_blocks": blocks}
    return tokens, info
