"""Block diffusion (BD3-LM) on token sequences: the two-stream loss and block-by-block decoding.

`BlockDiffusionTask` is the "text_diffusion" task with `discrete.block_size = K > 0`: the
sequence is cut into blocks of K tokens, the model is autoregressive over blocks and a masked
diffusion inside each block. Training is one network pass over the two-stream input
`[x_t ; x_0]` (length 2L) with the block-diffusion attention mask (`dd.block_masked_elbo`);
decoding runs block by block with a key/value cache of the clean prefix (`dd.block_sample`).
Reference: Arriola et al. 2025, Block Diffusion: Interpolating Between Autoregressive and
Diffusion Language Models.

Packed documents (a source with `eos_id`): segment ids from the clean batch are used on both
halves of the two-stream input (the same id for x_t^l and x_0^l) and rotary positions restart
in each document on both halves, so a noisy token sees the noisy tokens of its own block and the
clean tokens of earlier blocks of its own document only. Decoding generates one document from
position 0 (stop at `sample.eos_id`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

import diffax.discrete as dd
from diffax.core import LinearHead
from diffax.discrete.blocks import block_masked_bound_with_log_z, block_masked_elbo
from diffax.nn.attention import MaskSpec, positions_from_segments
from diffax.nn.block_models import bd3_block_model, two_stream_fn
from diffax.training.tasks.text import TextDiffusionTask, masked_mean

KV_CACHES = ("exact", "none")


def _fail(key: str, value, allowed: str) -> None:
    raise ValueError(f"{key}={value!r} is not allowed; allowed values: {allowed}")


def segmented_two_stream_fn(module, block_size: int, segment_ids: jax.Array, head_chunk: int):
    """The two-stream model of `dd.block_masked_elbo` for packed documents.

    Like `diffax.nn.block_models.two_stream_fn` (per-block times on the noisy half, 0 on the clean
    half, `MaskSpec("block_diffusion", K)`), with `segment_ids` on both halves and rotary
    positions restarting at each document start on both halves.

    Args:
      module: a `DiffusionTransformer`.
      block_size: K, dividing L.
      segment_ids: `[B, L]` int32 document ids of the clean batch.
      head_chunk: > 0: return a `LinearHead` with this vocabulary chunk; 0: logits.

    Returns:
      `fn(tokens [B, 2L] int32, t [B, L // K]) -> logits [B, L, V]` (or a `LinearHead` whose
      hidden is `[B, L, dim]`).
    """
    mask = MaskSpec("block_diffusion", block_size)
    segments = jnp.concatenate([segment_ids, segment_ids], axis=1)
    positions = jnp.tile(positions_from_segments(segment_ids), (1, 2))

    def fn(tokens, t):
        batch, length = tokens.shape[0], tokens.shape[1] // 2
        t_tokens = jnp.concatenate(
            [jnp.repeat(t, block_size, axis=1), jnp.zeros((batch, length), jnp.float32)], axis=1
        )
        hidden = module.features(
            tokens, t_tokens, segment_ids=segments, positions=positions, mask=mask
        )[:, :length]
        kernel, bias = module.head_weights()
        if head_chunk:
            return LinearHead(hidden, kernel, bias, chunk_size=head_chunk)
        logits = jnp.dot(hidden, kernel, preferred_element_type=jnp.float32)
        if bias is not None:
            logits = logits + bias.astype(jnp.float32)
        return logits[..., : module.num_classes]

    return fn


class BlockDiffusionTask(TextDiffusionTask):
    """BD3-LM: masked diffusion inside blocks of `discrete.block_size` tokens, AR across blocks.

    Needs `process.name="masked"`, `train.loss="masked_elbo"`, `discrete.prediction="denoiser"`
    and a block size dividing `data.seq_len`. Training times are t ~ U[discrete.t_min,
    discrete.t_max] per block (BD3-LM's clipped schedule; the full [0, 1] is the NELBO);
    evaluation always integrates over [0, 1] (the block NELBO, an upper bound on the NLL).
    `train.z_loss` and `train.loss_vocab_chunk` work as in `TextDiffusionTask`.

    Sampling: `sample.num_steps` grid intervals in all, `sample.num_steps / num_blocks` per block
    (num_blocks = sample.max_length / K, max_length 0 meaning data.seq_len), with
    `sample.sampler` (any masked sampler: ancestral, first_hitting, confidence, remdm) and its
    options; `sample.kv_cache` "exact" (the clean prefix's keys/values cached, K token
    evaluations per call) or "none" (the whole sequence rerun with the block-causal mask; same
    tokens for the same key); `sample.eos_id` >= 0 stops each sequence at its first generated
    EOS (info["lengths"]).

    Config keys read besides those of `TextDiffusionTask`: discrete.{block_size, t_min, t_max,
    cond_prefix}, sample.{kv_cache, eos_id, max_length}.
    """

    def __init__(self, config):
        super().__init__(config)
        d, s = config.discrete, config.sample
        k = d.block_size
        if isinstance(k, bool) or not isinstance(k, int) or k < 1 or self.seq_len % k:
            _fail("discrete.block_size", k, f"a divisor of data.seq_len={self.seq_len}")
        self.block_size = k
        if self.process.mask_id is None:
            _fail("process.name", config.process.name, "'masked' (with discrete.block_size > 0)")
        if self.loss_name != "masked_elbo":
            _fail("train.loss", self.loss_name, "'masked_elbo' (with discrete.block_size > 0)")
        if self.prediction != "denoiser":
            _fail(
                "discrete.prediction", self.prediction, "'denoiser' (with discrete.block_size > 0)"
            )
        if d.cond_prefix:
            _fail("discrete.cond_prefix", d.cond_prefix, "0 (with discrete.block_size > 0)")
        t_min, t_max = d.t_min, d.t_max
        if not (
            isinstance(t_min, int | float)
            and isinstance(t_max, int | float)
            and 0.0 <= t_min < t_max <= 1.0
        ):
            raise ValueError(
                f"discrete.t_min={t_min!r}, discrete.t_max={t_max!r} are not allowed; allowed "
                "values: 0 <= discrete.t_min < discrete.t_max <= 1"
            )
        self.t_min, self.t_max = float(t_min), float(t_max)
        if s.kv_cache not in KV_CACHES:
            _fail("sample.kv_cache", s.kv_cache, ", ".join(map(repr, KV_CACHES)))
        self.kv_cache = s.kv_cache
        length = s.max_length or self.seq_len
        if not isinstance(length, int) or not 0 < length <= self.seq_len or length % k:
            _fail(
                "sample.max_length",
                s.max_length,
                f"0 (data.seq_len) or a multiple of discrete.block_size={k} in [1, {self.seq_len}]",
            )
        self.sample_length = length
        num_blocks = length // k
        if self.num_steps % num_blocks:
            _fail(
                "sample.num_steps",
                self.num_steps,
                f"a multiple of the number of blocks {num_blocks} (= {length} / {k})",
            )
        self.steps_per_block = self.num_steps // num_blocks
        eos = s.eos_id
        if not isinstance(eos, int) or not -1 <= eos < self.vocab_size:
            _fail("sample.eos_id", eos, f"-1 (no EOS stop) or a token id in [0, {self.vocab_size})")
        self.sample_eos = None if eos < 0 else eos
        unsupported = sorted({"ts", "trajectory", "cache"} & set(self.sample_options))
        if unsupported:
            raise ValueError(
                f"sample.options={s.options!r}: {', '.join(unsupported)} not supported with "
                "discrete.block_size > 0 (block-by-block decoding)"
            )

    def two_stream(self, params, segment_ids: jax.Array | None = None, *, head: bool = False):
        """The two-stream model `(tokens [B, 2L], t [B, L // K]) -> [B, L, V]` (or `LinearHead`).

        Args:
          params: the network parameters.
          segment_ids: optional `[B, L]` document ids of the clean batch.
          head: return a `LinearHead` (vocab-chunked cross-entropy, `train.loss_vocab_chunk`).
        """
        chunk = self.vocab_chunk if head else 0

        def fn(tokens, t):
            module = self.model_def.module(params)  # in the caller's trace (see `model_fn`)
            if segment_ids is not None:
                inner = segmented_two_stream_fn(module, self.block_size, segment_ids, chunk)
            elif head:
                inner = two_stream_fn(module, self.block_size, head=True, chunk_size=chunk)
            else:
                inner = two_stream_fn(module, self.block_size)
            return inner(tokens, t)

        return fn

    def loss(self, params, key, batch):
        """Mean training loss in nats per token: the block NELBO at t ~ U[t_min, t_max].

        Metrics as `TextDiffusionTask.loss` (`bits_per_char` / `bits_per_token`, `z_loss`).
        """
        segments = self.segment_ids(batch)
        model_fn = self.two_stream(params, segments, head=bool(self.vocab_chunk))
        terms, log_z, masked = block_masked_bound_with_log_z(
            key,
            self.process,
            model_fn,
            batch,
            block_size=self.block_size,
            t_min=self.t_min,
            t_max=self.t_max,
        )
        per_token = jnp.mean(terms.total) / self.seq_len
        metrics = {f"bits_per_{self.unit}": per_token / math.log(2.0)}
        if not self.z_loss:
            return per_token, metrics
        z_term = self.z_loss * masked_mean(jnp.square(log_z), masked)
        return per_token + z_term, dict(metrics, z_loss=z_term)

    def eval_nats(self, params, key, batch, num_time_samples: int):
        """`[B]` block NELBO in nats per sequence, times over [0, 1], mean of `num_time_samples`.

        Each sample draws new per-block times (uniform on (0, 1] for every block, stratified over
        the batch) and masks; samples run one at a time (`lax.map`).
        """
        segments = self.segment_ids(batch)
        model_fn = self.two_stream(params, segments, head=self.chunked_eval)

        def one(i):
            k = jax.random.fold_in(key, i)
            return block_masked_elbo(k, self.process, model_fn, batch, block_size=self.block_size)

        nats = jax.lax.map(one, jnp.arange(num_time_samples, dtype=jnp.int32))
        return jnp.mean(nats, axis=0)

    def block_model(self, params) -> dd.BlockModel:
        """The `BlockModel` of `sample.kv_cache`: exact KV cache, or the uncached reference.

        Every call rebuilds the module in the caller's trace (the sampler's `lax` loops), as
        `model_fn` does.
        """
        k = self.block_size
        if self.kv_cache == "exact":
            cached = lambda: bd3_block_model(self.model_def.module(params), k)
            return dd.BlockModel(
                init=lambda batch, length: cached().init(batch, length),
                denoise=lambda cache, x, t, start: cached().denoise(cache, x, t, start),
                append=lambda cache, x, start: cached().append(cache, x, start),
                cached=True,
            )
        mask = MaskSpec("block_causal", k)
        model_fn = lambda tokens, t: self.model_def.module(params)(tokens, t, mask=mask)
        return dd.uncached_block_model(model_fn, self.process.mask_id)

    def sample(self, params, key, num: int):
        """`[num, sample length]` int32 samples and info (`nfe`, `token_evals`, `lengths`)."""
        return dd.block_sample(
            key,
            self.process,
            self.block_model(params),
            (num, self.sample_length),
            block_size=self.block_size,
            steps_per_block=self.steps_per_block,
            sampler=self.sampler,
            eos_id=self.sample_eos,
            **self.sample_options,
        )
