"""Task "text_diffusion": discrete diffusion on token sequences with a DiT-style transformer."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

import diffax.discrete as dd
from diffax.core import LinearHead
from diffax.data import build_source
from diffax.discrete.guidance import classifier_free_guidance
from diffax.discrete.losses.masked import masked_bound_with_log_z
from diffax.nn import DiffusionTransformer
from diffax.nn.attention import segment_ids_from_eos
from diffax.nn.block_models import fast_dllm_model
from diffax.training.state import ModelDef
from diffax.training.tasks.base import TASKS
from diffax.training.tasks.model_dtype import compute_dtype
from diffax.training.tasks.sample_options import sample_options

PROCESS_NAMES = ("masked", "uniform")


def make_discrete_process(process_config, vocab_size: int):
    """A `Masked` or `Uniform` process with a named schedule from the `process` config section.

    Schedule parameters: `process.schedule_eps` ("loglinear"), `process.schedule_sigma_min` and
    `process.schedule_sigma_max` ("geometric"), `process.schedule_power` ("polynomial").
    """
    name, sched = process_config.name, process_config.schedule
    schedule_cls = dd.SCHEDULES.get(sched, "process.schedule")
    kwargs = {
        "loglinear": {"eps": process_config.schedule_eps},
        "geometric": {
            "sigma_min": process_config.schedule_sigma_min,
            "sigma_max": process_config.schedule_sigma_max,
        },
        "polynomial": {"power": process_config.schedule_power},
    }.get(sched, {})
    if name not in PROCESS_NAMES:
        raise ValueError(
            f"process.name={name!r} is not supported for text; allowed values: "
            f"{', '.join(map(repr, PROCESS_NAMES))}"
        )
    return dd.PROCESSES.get(name, "process.name")(vocab_size, schedule_cls(**kwargs))


@TASKS.register("text_diffusion")
class TextDiffusionTask:
    """Discrete diffusion on token sequences (a `TokenSource`) with a DiT transformer.

    With `train.loss="masked_elbo"` and `train.loss_vocab_chunk > 0` the network hands the loss
    its hidden state and output projection (`LinearHead`): the cross-entropy runs in vocab
    chunks and `[B, L, V]` logits never exist (also in the masked ELBO of evaluation).
    `train.z_loss > 0` adds z_loss * mean(log Z^2) over the masked positions (masked_elbo
    only). When the source's stream has document boundaries (`eos_id` not None), segment ids
    from the clean batch keep attention inside each packed document, in the loss and in eval.

    Config keys read (once, here): data.* (through the source named by data.source),
    process.{name, schedule, schedule_eps, schedule_sigma_min, schedule_sigma_max,
    schedule_power}, discrete.prediction, model.{dim, depth, num_heads, mlp_ratio,
    time_conditioning, dtype, cond_dim, attention, scan_layers, remat, vocab_multiple},
    train.{loss, loss_vocab_chunk, z_loss}, sample.{sampler, num_steps, options, temperature,
    top_p}, seed.
    """

    metric = "elbo"
    sampler_options = staticmethod(dd.sampler_options)

    def __new__(cls, config):
        # discrete.block_size > 0 selects block diffusion (BD3-LM) under the same task name;
        # Python then runs the subclass's __init__ on the returned instance.
        if cls is TextDiffusionTask and config.discrete.block_size:
            from diffax.training.tasks.block_text import BlockDiffusionTask

            return super().__new__(BlockDiffusionTask)
        return super().__new__(cls)

    def __init__(self, config):
        self.source = build_source(config.data, config.seed, kind="tokens", task=config.task)
        self.seq_len = self.source.example_shape[0]
        self.vocab_size = self.source.tokenizer.vocab_size
        self.eos_id = getattr(self.source, "eos_id", None)
        # Character-level tokenizers (text8, char, byte) report bits per character; a subword
        # tokenizer (data.tokenizer_path, prepared shards) reports bits per token.
        subword = bool(config.data.tokenizer_path) or config.data.source == "shards"
        self.unit = "token" if subword else "char"
        self.process = make_discrete_process(config.process, self.vocab_size)
        self.prediction = config.discrete.prediction
        if self.prediction not in dd.PREDICTIONS:
            raise ValueError(
                f"discrete.prediction={self.prediction!r} is not allowed; allowed values: "
                f"{', '.join(map(repr, dd.PREDICTIONS))}"
            )
        self.loss_name = config.train.loss
        self.loss_fn = dd.loss_fn(self.loss_name)
        masked = self.loss_name == "masked_elbo"
        if masked and self.process.mask_id is None:
            raise ValueError(
                f"train.loss='masked_elbo' needs process.name='masked', got {config.process.name!r}"
            )
        if masked and self.prediction != "denoiser":
            raise ValueError(
                f"train.loss='masked_elbo' needs discrete.prediction='denoiser', got "
                f"{self.prediction!r}"
            )
        self.vocab_chunk = int(config.train.loss_vocab_chunk)
        self.z_loss = float(config.train.z_loss)
        if self.z_loss and not masked:
            raise ValueError(
                f"train.z_loss={self.z_loss!r} needs train.loss='masked_elbo' (got "
                f"{self.loss_name!r}); allowed values with this loss: 0.0"
            )
        # The chunked head applies wherever the masked ELBO is the estimator (training with
        # masked_elbo; evaluation of an absorbing process with a denoiser, see `dd.elbo`).
        self.chunked_eval = (
            self.vocab_chunk > 0
            and self.process.mask_id is not None
            and self.prediction == "denoiser"
        )
        s = config.sample
        self.sampler, self.num_steps = s.sampler, s.num_steps
        self.sample_options = sample_options(s, self.sampler_options)
        self.cond_prefix, self.cond_dropout, self.guidance_scale = prefix_conditioning(
            config, self.seq_len, masked=masked and self.process.mask_id is not None
        )
        if self.cond_prefix and {"fixed_tokens", "fixed_mask"} & set(self.sample_options):
            raise ValueError(
                f"sample.options={s.options!r} sets fixed_tokens / fixed_mask, which "
                f"discrete.cond_prefix={self.cond_prefix} sets from held-out prompts; allowed "
                "values: options without fixed_tokens and fixed_mask"
            )
        self._prompts: dict[int, np.ndarray] = {}
        # Block diffusion models (discrete.block_size > 0) check their decoding keys themselves.
        self.decode_block = (
            0
            if config.discrete.block_size
            else semi_ar_settings(config, self.seq_len, self.sample_options)
        )
        self.kv_cache, self.refresh_every = s.kv_cache, s.refresh_every
        m = config.model
        dtype = compute_dtype(m.dtype)

        def build(rngs):
            return DiffusionTransformer(
                self.process.num_input_ids,
                self.vocab_size,
                self.seq_len,
                m.dim,
                m.depth,
                m.num_heads,
                rngs=rngs,
                mlp_ratio=m.mlp_ratio,
                time_conditioning=m.time_conditioning,
                dtype=dtype,
                cond_dim=m.cond_dim,
                attention=m.attention,
                scan_layers=m.scan_layers,
                remat=m.remat,
                vocab_multiple=m.vocab_multiple,
            )

        self.model_def, self.init_params = ModelDef.create(build, config.seed)

    def model_fn(self, params, segment_ids: jax.Array | None = None):
        """`(tokens: [B, L] int32, t: [B]) -> [B, L, V]` in the `discrete.prediction` form.

        Args:
          params: the network parameters.
          segment_ids: optional `[B, L]` document ids of the batch (attention stays inside a
            document); None: one document per row.
        """

        def fn(tokens, t):
            # The module is rebuilt in the caller's trace: samplers and `dd.elbo` call model_fn
            # inside `lax` loops, where a module built outside them (its `nnx.scan` over the
            # blocks) would see variables of another trace level.
            module = self.model_def.module(params)
            return module(tokens, t, segment_ids=segment_ids)

        return fn

    def head_fn(self, params, segment_ids: jax.Array | None = None):
        """`(tokens, t) -> LinearHead` (hidden `[B, L, D]`, the output projection, the chunk).

        For the masked ELBO: its cross-entropy then runs in `train.loss_vocab_chunk`-class
        chunks and never materialises `[B, L, V]` logits. Arguments as `model_fn`.
        """

        def fn(tokens, t):
            module = self.model_def.module(params)  # in the caller's trace, as in `model_fn`
            hidden = module.features(tokens, t, segment_ids=segment_ids)
            kernel, bias = module.head_weights()
            return LinearHead(hidden, kernel, bias, chunk_size=self.vocab_chunk)

        return fn

    def segment_ids(self, x0: jax.Array) -> jax.Array | None:
        """`[B, L]` document ids of a clean batch (None when the source has no EOS).

        The clean batch defines the documents: noisy tokens may hide an EOS behind the mask.
        """
        if self.eos_id is None:
            return None
        return segment_ids_from_eos(x0, self.eos_id)

    def loss(self, params, key, batch):
        """Mean training loss in nats per token (a negative ELBO for the bound losses).

        Metrics: `bits_per_char` or `bits_per_token` (see `unit`: the loss without the z-loss,
        in bits) and, when `train.z_loss > 0`, `z_loss` (the term added: z_loss * mean(log Z^2)
        over the masked positions).
        """
        segments = self.segment_ids(batch)
        if self.loss_name != "masked_elbo":
            model_fn = self.model_fn(params, segments)
            nats = self.loss_fn(key, self.process, model_fn, batch, prediction=self.prediction)
            per_token = jnp.mean(nats) / self.seq_len
            return per_token, {f"bits_per_{self.unit}": per_token / math.log(2.0)}
        model_fn = (
            self.head_fn(params, segments) if self.vocab_chunk else self.model_fn(params, segments)
        )
        targets = batch
        if self.cond_prefix:
            key, key_drop = jax.random.split(key)
            drop = jax.random.bernoulli(key_drop, self.cond_dropout, (batch.shape[0],))
            model_fn = self.continuation_fn(model_fn, batch[:, : self.cond_prefix], drop)
            targets = batch[:, self.cond_prefix :]
        terms, log_z, masked = masked_bound_with_log_z(key, self.process, model_fn, targets)
        per_token = jnp.mean(terms.total) / targets.shape[1]
        metrics = {f"bits_per_{self.unit}": per_token / math.log(2.0)}
        if not self.z_loss:
            return per_token, metrics
        z_term = self.z_loss * masked_mean(jnp.square(log_z), masked)
        return per_token + z_term, dict(metrics, z_loss=z_term)

    def eval_nats(self, params, key, batch, num_time_samples: int):
        """`[B]` negative ELBO in nats per sequence (`num_time_samples` time samples each).

        With `discrete.cond_prefix` = P > 0: the ELBO of the L - P continuation tokens given
        the clean prefix (no condition dropout).
        """
        segments = self.segment_ids(batch)
        fn = (self.head_fn if self.chunked_eval else self.model_fn)(params, segments)
        targets = batch
        if self.cond_prefix:
            fn = self.continuation_fn(fn, batch[:, : self.cond_prefix])
            targets = batch[:, self.cond_prefix :]
        return dd.elbo(
            key,
            self.process,
            fn,
            targets,
            prediction=self.prediction,
            num_samples=num_time_samples,
        )

    def tokens_per_example(self) -> int:
        """Units (characters or subword tokens, see `unit`) per example, for bits-per-unit.

        The modelled tokens: L, or L - P with a condition prefix of P tokens.
        """
        return self.seq_len - self.cond_prefix

    def continuation_fn(self, fn, prefix: jax.Array, drop: jax.Array | None = None):
        """The model of the continuation given a clean prefix (prefix conditioning).

        Args:
          fn: `(tokens [B, L], t) -> [B, L, V]` logits or a `LinearHead` (hidden `[B, L, D]`).
          prefix: `[B, P]` int32 clean condition tokens.
          drop: optional `[B]` bool: rows whose condition is dropped (set to the mask id).

        Returns:
          `(x [B, L - P], t) -> [B, L - P, V]` (or the `LinearHead` of those positions): the
          network run on `[prefix ; x]`.
        """
        cond = prefix
        if drop is not None:
            cond = jnp.where(drop[:, None], self.process.mask_id, prefix).astype(prefix.dtype)
        size = prefix.shape[1]

        def continuation(tokens, t):
            out = fn(jnp.concatenate([cond, tokens], axis=1), t)
            if isinstance(out, LinearHead):
                return dataclasses.replace(out, hidden=out.hidden[:, size:])
            return out[:, size:]

        return continuation

    def prompts(self, num: int) -> np.ndarray:
        """`[num, seq_len]` int32 held-out sequences whose first P tokens are the prompts.

        The first `num` held-out sequences (repeated when the held-out data holds fewer).
        """
        if num not in self._prompts:
            batches = self.source.eval_batches(num, 1)
            if batches:
                rows = np.asarray(batches[0])
            else:
                every = self.source.eval_batches(1, 0)
                if not every:
                    raise ValueError(
                        f"discrete.cond_prefix={self.cond_prefix} samples continue held-out "
                        "prompts, but the source has no held-out sequence"
                    )
                rows = np.concatenate(every)[np.arange(num) % len(every)]
            self._prompts[num] = rows.astype(np.int32)
        return self._prompts[num]

    def sample(self, params, key, num: int):
        """`[num, seq_len]` int32 samples and the sampler info (`nfe`).

        With `discrete.cond_prefix` = P > 0 the first P tokens are held-out prompts (kept) and
        the rest is sampled with classifier-free guidance weight `sample.guidance_scale`.
        """
        model_fn, options = self.model_fn(params), dict(self.sample_options)
        if self.cond_prefix:
            prompts = jnp.asarray(self.prompts(num))
            prefix = prompts[:, : self.cond_prefix]
            options["fixed_tokens"] = prompts
            options["fixed_mask"] = jnp.broadcast_to(
                jnp.arange(self.seq_len) < self.cond_prefix, prompts.shape
            )
            if self.guidance_scale != 1.0:
                model_fn = self.guided_model_fn(model_fn, prefix)
        if self.decode_block:
            if self.kv_cache == "none":
                cached_model = dd.full_cached_model(model_fn)
            else:
                cached_model = fast_dllm_model(self.model_def.module(params))
            return dd.semi_ar_sample(
                key,
                self.process,
                cached_model,
                (num, self.seq_len),
                block_size=self.decode_block,
                steps_per_block=self.num_steps // (self.seq_len // self.decode_block),
                sampler=self.sampler,
                cache=self.kv_cache,
                refresh_every=self.refresh_every,
                **options,
            )
        return dd.sample(
            key,
            self.process,
            model_fn,
            (num, self.seq_len),
            sampler=self.sampler,
            num_steps=self.num_steps,
            prediction=self.prediction,
            **options,
        )

    def guided_model_fn(self, model_fn, prefix: jax.Array, guidance_scale: float | None = None):
        """Classifier-free guided `(tokens [B, L], t) -> [B, L, V]` for prompts `prefix [B, P]`.

        The condition replaces the first P tokens of the input; the null condition is the
        masked prefix. `guidance_scale` defaults to `sample.guidance_scale`.
        """
        size = prefix.shape[1]

        def conditional(tokens, t, cond):
            return model_fn(jnp.concatenate([cond, tokens[:, size:]], axis=1), t)

        scale = self.guidance_scale if guidance_scale is None else guidance_scale
        null = jnp.full_like(prefix, self.process.mask_id)
        return classifier_free_guidance(
            conditional, prefix, null, scale, process=self.process, prediction=self.prediction
        )


def prefix_conditioning(config, seq_len: int, *, masked: bool) -> tuple[int, float, float]:
    """`(cond_prefix, cond_dropout, guidance_scale)` from the config, checked.

    Args:
      config: the whole config (discrete.cond_prefix, discrete.cond_dropout,
        sample.guidance_scale, process.name, train.loss).
      seq_len: L, the sequence length.
      masked: whether the process is absorbing and the loss is masked_elbo.

    Raises:
      ValueError: naming the key and its allowed values.
    """
    d, s = config.discrete, config.sample
    size, dropout, scale = d.cond_prefix, d.cond_dropout, s.guidance_scale
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size < seq_len:
        raise ValueError(
            f"discrete.cond_prefix={size!r} is not allowed; allowed values: 0 (off) or an "
            f"integer in [1, data.seq_len - 1 = {seq_len - 1}]"
        )
    if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout <= 1:
        raise ValueError(
            f"discrete.cond_dropout={dropout!r} is not allowed; allowed values: a probability "
            "in [0, 1]"
        )
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not math.isfinite(scale):
        raise ValueError(
            f"sample.guidance_scale={scale!r} is not allowed; allowed values: a finite number"
        )
    if size and not masked:
        raise ValueError(
            f"discrete.cond_prefix={size} needs process.name='masked' and "
            f"train.loss='masked_elbo' (got process.name={config.process.name!r}, "
            f"train.loss={config.train.loss!r})"
        )
    if not size and dropout:
        raise ValueError(
            f"discrete.cond_dropout={dropout!r} needs discrete.cond_prefix > 0; allowed values "
            "without a prefix: 0.0"
        )
    if not size and scale != 1.0:
        raise ValueError(
            f"sample.guidance_scale={scale!r} needs discrete.cond_prefix > 0 (a conditional "
            "model); allowed values without a prefix: 1.0"
        )
    return size, float(dropout), float(scale)


def semi_ar_settings(config, seq_len: int, options: dict) -> int:
    """The semi-autoregressive block length of a full-attention model's sampling (0: off), checked.

    `sample.block_size` > 0 decodes block by block (`dd.semi_ar_sample`, LLaDA / Fast-dLLM) with
    `sample.kv_cache` none | prefix | dual and `sample.refresh_every`; it needs an absorbing
    process, a denoiser, a block size dividing `data.seq_len` and `sample.num_steps` a multiple
    of the number of blocks.
    """
    s = config.sample
    block = int(s.block_size)
    if not block:
        if s.kv_cache != "none" or s.refresh_every:
            raise ValueError(
                f"sample.kv_cache={s.kv_cache!r} / sample.refresh_every={s.refresh_every} need "
                "block decoding (sample.block_size > 0, or discrete.block_size > 0 for block "
                "diffusion); allowed values without it: kv_cache 'none', refresh_every 0"
            )
        return 0
    if config.process.name != "masked" or config.discrete.prediction != "denoiser":
        raise ValueError(
            f"sample.block_size={block} (semi-autoregressive decoding) needs process.name='masked' "
            f"and discrete.prediction='denoiser', got {config.process.name!r} / "
            f"{config.discrete.prediction!r}"
        )
    if seq_len % block:
        raise ValueError(
            f"sample.block_size={block} must divide data.seq_len={seq_len}; allowed values: the "
            f"divisors of {seq_len}"
        )
    if s.num_steps % (seq_len // block):
        raise ValueError(
            f"sample.num_steps={s.num_steps} must be a multiple of the number of blocks "
            f"{seq_len // block} (data.seq_len / sample.block_size)"
        )
    allowed = ("none", "prefix", "dual")
    if s.kv_cache not in allowed:
        raise ValueError(
            f"sample.kv_cache={s.kv_cache!r} is not allowed for a full-attention model; allowed "
            f"values: {', '.join(map(repr, allowed))} ('exact' is for block diffusion models, "
            "discrete.block_size > 0)"
        )
    unsupported = sorted({"ts", "trajectory", "cache"} & set(options))
    if unsupported:
        raise ValueError(
            f"sample.options={s.options!r}: {', '.join(unsupported)} not supported with "
            "sample.block_size > 0 (semi-autoregressive decoding)"
        )
    if s.kv_cache != "none" and s.guidance_scale != 1.0 and config.discrete.cond_prefix:
        raise ValueError(
            f"sample.kv_cache={s.kv_cache!r} with classifier-free guidance (sample."
            f"guidance_scale={s.guidance_scale}) is not supported; allowed: kv_cache 'none'"
        )
    return block


def masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of `values` over the positions where `mask` is True (0 when there are none)."""
    count = jnp.sum(mask)
    total = jnp.sum(jnp.where(mask, values, 0.0))
    return total / jnp.maximum(count, 1)
