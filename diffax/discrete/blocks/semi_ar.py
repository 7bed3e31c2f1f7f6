"""Semi-autoregressive decoding of a full-attention masked model, with approximate KV caches.

`semi_ar_sample` decodes the blocks of a sequence left to right (LLaDA): inside block b a masked
sampler `Step` (default `confidence`) runs on the `[B, K]` block while the network sees the whole
sequence, the clean blocks before b and the still masked blocks after it. The network is reached
through the `CachedModel` protocol (`diffax.discrete.blocks.models`), which lets a step reuse
keys/values of positions it does not recompute (Fast-dLLM):

* cache="none": every call is a full forward of the L positions (`refresh`): exact.
* cache="prefix": the first call of a block is a full forward that stores every position's
  keys/values; later calls recompute the window `[start, L)` (block and suffix) and reuse the
  cached prefix. W = L - start is static per block, so the blocks are a Python loop.
* cache="dual": the first call of a block, and every `refresh_every`-th call after it, is a full
  forward; the other calls recompute only the block `[start, start + K)` and reuse the cached
  prefix and suffix. The blocks run under `lax.fori_loop`.

With an exact model (`full_cached_model`) the three modes give the same tokens; with a real
cache the stale keys/values make "prefix" and "dual" approximations, whose quality is measured
against "none".

The cache lives in the sampler state dict (`Step` design, `diffax.discrete.samplers.step`): the
`Model` the step calls is `_SemiARModel`, whose calls read and update the state's entries
"seq" (the full sequence at the block's start), "cache", "calls" (network calls in the block) and
"token_evals" next to the usual "nfe" / "bad".
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from diffax.core import check_choice, check_positive_int, check_shape
from diffax.discrete.blocks.models import CachedModel
from diffax.discrete.blocks.sample import build_step, check_block_arguments, prompt_arrays
from diffax.discrete.categorical import INVALID_TOKEN
from diffax.discrete.processes import Process
from diffax.discrete.samplers.grids import GRIDS
from diffax.discrete.samplers.loop import denoise, finish_tokens
from diffax.discrete.samplers.step import Model, State, Step, non_finite

CACHE_MODES = ("none", "prefix", "dual")


def _masked_time(process: Process, x: jax.Array) -> jax.Array:
    """`[B]` time whose masking level 1 - alpha(t) is the fraction of masks in `x` `[B, L]`."""
    frac = jnp.mean((x == process.mask_id).astype(jnp.float32), axis=-1)
    return jnp.clip(process.schedule.inverse_alpha(1.0 - frac), 0.0, 1.0)


class _SemiARModel(Model):
    """The `Model` a step sees inside block `[start, start + K)` of a semi-AR run.

    Its calls take the block `[B, K]`, write it into the full sequence held in the state, and
    evaluate the network through `cached_model` as the cache mode says. The network time is the
    one whose masking level matches the whole sequence's fraction of masks (the step's own t is
    the block's time; time-free models such as LLaDA ignore it).
    """

    def __init__(
        self,
        process: Process,
        cached_model: CachedModel,
        shape: tuple[int, int],
        *,
        seq: jax.Array,
        cache: Any,
        start: Any,
        mode: str,
        refresh_every: int,
        temperature: float,
        top_p: float,
    ):
        super().__init__(
            process, None, "denoiser", shape, temperature=temperature, top_p=top_p, cache=False
        )
        self.cached_model, self.seq, self.cache_init = cached_model, seq, cache
        self.start, self.mode, self.refresh_every = start, mode, refresh_every

    def init(self) -> State:
        """The model entries (see the module docstring) at the block's start."""
        state = super().init()
        state.update(
            seq=self.seq,
            calls=jnp.zeros((), jnp.int32),
            token_evals=jnp.zeros((), jnp.int32),
        )
        if self.mode != "none":
            state["cache"] = self.cache_init
        return state

    def __call__(self, state: State, x: jax.Array, t: jax.Array) -> tuple[jax.Array, State]:
        """Denoiser logits `[B, K, V]` of the block `x` `[B, K]`. Returns `(out, state)`."""
        del t
        batch, k = x.shape
        length = state["seq"].shape[1]
        seq = jax.lax.dynamic_update_slice(state["seq"], x.astype(jnp.int32), (0, self.start))
        # An invalid token (a failed draw) is shown to the network as a mask.
        seq = jnp.where(seq < 0, self.process.mask_id, seq)
        t_net = _masked_time(self.process, seq)
        model = self.cached_model

        def refresh(cache):
            logits, cache = model.refresh(seq, t_net)
            check_shape(logits, (batch, length, self.process.vocab_size), "refresh logits")
            return jax.lax.dynamic_slice_in_dim(logits, self.start, k, axis=1), cache

        calls = state["calls"]
        if self.mode == "none":
            out, _ = refresh(None)
            evals = jnp.asarray(length, jnp.int32)
            cache = {}
        else:
            if self.mode == "prefix":
                window = seq[:, self.start :]  # static width: start is a Python int here
                refresh_now = calls == 0
            else:
                window = jax.lax.dynamic_slice_in_dim(seq, self.start, k, axis=1)
                every = self.refresh_every
                refresh_now = (calls == 0) if every == 0 else (calls % every == 0)
            width = window.shape[1]

            def recompute(cache):
                logits = model.window(cache, window, t_net, self.start)
                check_shape(logits, (batch, width, self.process.vocab_size), "window logits")
                return logits[:, :k], cache

            out, new_cache = jax.lax.cond(refresh_now, refresh, recompute, state["cache"])
            evals = jnp.where(refresh_now, length, width).astype(jnp.int32)
            cache = {"cache": new_cache}
        out = jnp.asarray(out, jnp.float32)
        return out, {
            **state,
            **cache,
            "nfe": state["nfe"] + 1,
            "bad": state["bad"] | non_finite(out),
            "calls": calls + 1,
            "token_evals": state["token_evals"] + evals,
        }

    def with_time_derivative(self, state, x, t, order):
        """Not available: a `CachedModel` returns denoiser logits only."""
        raise ValueError("semi_ar_sample supports prediction='denoiser' samplers only")


def semi_ar_sample(
    key: jax.Array,
    process: Process,
    cached_model: CachedModel,
    shape: tuple[int, ...],
    *,
    block_size: int,
    steps_per_block: int,
    sampler: str | Step = "confidence",
    cache: str = "none",
    refresh_every: int = 0,
    fixed_tokens: jax.Array | None = None,
    fixed_mask: jax.Array | None = None,
    temperature: float = 1.0,
    top_p: float = 1.0,
    **sampler_options: Any,
) -> tuple[jax.Array, dict[str, Any]]:
    """Semi-autoregressive decoding of a full-attention masked model (LLaDA / Fast-dLLM).

    Block b (positions `[bK, (b + 1)K)`, left to right) is drawn by `sampler` over
    `steps_per_block` intervals of its default grid (as in `sample`; `first_hitting` takes one
    interval per token), on the `[B, K]` block, with the network seeing the whole sequence:
    earlier blocks as generated, later blocks masked (up to `fixed_tokens`). Per block, the loop
    is `run_steps`'s: key `fold_in(key, b)`, split into a prior key and a loop key whose
    `fold_in(., i)` drives interval i; fixed positions are restored after every step; the last
    interval is the step's `final` (default: draw the remaining masks from the denoiser). So for
    the same key every cache mode draws the same tokens when the model is exact
    (`full_cached_model`). A block made only of fixed tokens is skipped. Under `jit` everything
    stays on device.

    Args:
      key: PRNG key.
      process: an absorbing process (`mask_id` not None), the one the model was trained on.
      cached_model: a `CachedModel`: `full_cached_model(model_fn)` (exact, every call a full
        forward) or `diffax.nn.block_models.fast_dllm_model(model)` (a transformer's KV cache).
      shape: `(B, L)`.
      block_size: K, dividing L.
      steps_per_block: grid intervals per block (>= 1).
      sampler: a masked sampler name ("confidence", "ancestral", "remdm", "first_hitting")
        built with `sampler_options`, or a `Step`.
      cache: "none" (every call a full forward), "prefix" (full forward at each block's
        start, then the window `[start, L)`), or "dual" (full forward at the block's start and
        every `refresh_every` calls, the block `[start, start + K)` otherwise).
      refresh_every: "dual" only: refresh the cache every this many calls within a block
        (>= 0; 0: only at the block's start).
      fixed_tokens, fixed_mask: `[B, L]` prompt / infilling tokens kept fixed (both or neither).
      temperature, top_p: applied to the denoiser (see `Model`).
      **sampler_options: keywords of the sampler's factory (e.g. `threshold` for
        "confidence", `eta` for "remdm").

    Returns:
      `(tokens [B, L] int32, info)`: info["nfe"] network calls made (refreshes and windows),
      info["token_evals"] positions the network processed per sequence (L per refresh, the
      window's width per window call). A non-finite model output is a `ValueError` in an eager
      call and `INVALID_TOKEN` (-1) under `jit`.

    Reference: Nie et al. 2025 (LLaDA), semi-autoregressive remasking; Wu et al. 2025
    (Fast-dLLM), sec. 3.2, prefix and dual KV cache.
    """
    batch, length, k, steps_per_block = check_block_arguments(
        "semi_ar_sample", cached_model, CachedModel, process, shape, block_size, steps_per_block
    )
    check_choice(cache, CACHE_MODES, "cache")
    refresh_every = check_positive_int(refresh_every, "refresh_every", minimum=0)
    if refresh_every and cache != "dual":
        raise ValueError(
            f"refresh_every={refresh_every} applies to cache='dual' only (got cache={cache!r}); "
            f"use refresh_every=0"
        )
    step = build_step(sampler, sampler_options)
    ts = GRIDS.get(step.grid, f"grid of sampler {step.name!r}")(steps_per_block, (batch, k))
    num_intervals = ts.shape[0] - 1
    final = denoise if step.final is None else step.final
    prompt, prompt_mask = prompt_arrays(process, (batch, length), fixed_tokens, fixed_mask)
    seq0 = jnp.where(prompt_mask, prompt, process.mask_id).astype(jnp.int32)
    if cache == "none":
        empty_cache = None
    else:
        t0 = jnp.ones((batch,), jnp.float32)
        spec = jax.eval_shape(cached_model.refresh, seq0, t0)[1]
        empty_cache = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), spec)

    def run_block(b, carry):
        seq, bad, nfe, evals = carry
        start = b * k
        fixed_b = jax.lax.dynamic_slice_in_dim(prompt, start, k, axis=1)
        mask_b = jax.lax.dynamic_slice_in_dim(prompt_mask, start, k, axis=1)
        model = _SemiARModel(
            process,
            cached_model,
            (batch, k),
            seq=seq,
            cache=empty_cache,
            start=start,
            mode=cache,
            refresh_every=refresh_every,
            temperature=temperature,
            top_p=top_p,
        )

        def infill(x):
            return jnp.where(mask_b, fixed_b, x)

        def generate():
            key_prior, key_loop = jax.random.split(jax.random.fold_in(key, b))
            x = infill(process.sample_prior(key_prior, (batch, k))).astype(jnp.int32)
            state = step.init(model, x, ts)

            def body(carry, i):
                x, state = carry
                t, s = ts[i], ts[i + 1]
                key_i = jax.random.fold_in(key_loop, i)
                x_new, state = jax.lax.cond(
                    i == num_intervals - 1,
                    lambda: final(model, key_i, x, state, t),
                    lambda: step.step(model, key_i, x, state, t, s),
                )
                return (infill(jnp.where(x < 0, x, x_new)).astype(jnp.int32), state), None

            (x, state), _ = jax.lax.scan(body, (x, state), jnp.arange(num_intervals))
            x = jnp.where(state["bad"], INVALID_TOKEN, x).astype(jnp.int32)
            return x, state["bad"], state["nfe"], state["token_evals"]

        def prefilled():
            zero = jnp.zeros((), jnp.int32)
            return fixed_b, jnp.zeros((batch, k), jnp.bool_), zero, zero

        x, bad_b, nfe_b, evals_b = jax.lax.cond(jnp.all(mask_b), prefilled, generate)
        seq = jax.lax.dynamic_update_slice(seq, x, (0, start))
        bad = jax.lax.dynamic_update_slice(bad, bad_b, (0, start))
        return seq, bad, nfe + nfe_b, evals + evals_b

    zero = jnp.zeros((), jnp.int32)
    carry = (seq0, jnp.zeros((batch, length), jnp.bool_), zero, zero)
    num_blocks = length // k
    if cache == "prefix":
        for b in range(num_blocks):
            carry = run_block(b, carry)
    else:
        carry = jax.lax.fori_loop(0, num_blocks, run_block, carry)
    seq, bad, nfe, evals = carry
    tokens, info = finish_tokens(seq, {"bad": bad, "nfe": nfe}, step.name)
    info["token_evals"] = evals
    return tokens, info
