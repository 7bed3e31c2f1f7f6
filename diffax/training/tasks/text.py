"""Task "text_diffusion": discrete diffusion on token sequences with a DiT-style transformer."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

import diffax.discrete as dd
from diffax.core import LinearHead
from diffax.data import build_source
from diffax.discrete.losses.masked import masked_bound_with_log_z
from diffax.nn import DiffusionTransformer
from diffax.nn.attention import segment_ids_from_eos
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
        terms, log_z, masked = masked_bound_with_log_z(key, self.process, model_fn, batch)
        per_token = jnp.mean(terms.total) / self.seq_len
        metrics = {f"bits_per_{self.unit}": per_token / math.log(2.0)}
        if not self.z_loss:
            return per_token, metrics
        z_term = self.z_loss * masked_mean(jnp.square(log_z), masked)
        return per_token + z_term, dict(metrics, z_loss=z_term)

    def eval_nats(self, params, key, batch, num_time_samples: int):
        """`[B]` negative ELBO in nats per sequence (`num_time_samples` time samples each)."""
        segments = self.segment_ids(batch)
        fn = self.head_fn if self.chunked_eval else self.model_fn
        return dd.elbo(
            key,
            self.process,
            fn(params, segments),
            batch,
            prediction=self.prediction,
            num_samples=num_time_samples,
        )

    def tokens_per_example(self) -> int:
        """Units (characters or subword tokens, see `unit`) per example, for bits-per-unit."""
        return self.seq_len

    def sample(self, params, key, num: int):
        """`[num, seq_len]` int32 samples and the sampler info (`nfe`)."""
        return dd.sample(
            key,
            self.process,
            self.model_fn(params),
            (num, self.seq_len),
            sampler=self.sampler,
            num_steps=self.num_steps,
            prediction=self.prediction,
            **self.sample_options,
        )


def masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of `values` over the positions where `mask` is True (0 when there are none)."""
    count = jnp.sum(mask)
    total = jnp.sum(jnp.where(mask, values, 0.0))
    return total / jnp.maximum(count, 1)
