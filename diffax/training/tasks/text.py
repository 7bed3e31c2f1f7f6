"""Task "text_diffusion": discrete diffusion on token sequences with a DiT-style transformer."""

from __future__ import annotations

import math

import jax.numpy as jnp

import diffax.discrete as dd
from diffax.data import build_source
from diffax.nn import DiffusionTransformer
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
    """Discrete diffusion on character/byte tokens (a `TokenSource`) with a DiT transformer.

    Config keys read (once, here): data.* (through the source named by data.source),
    process.{name, schedule, schedule_eps, schedule_sigma_min, schedule_sigma_max,
    schedule_power}, discrete.prediction, model.{dim, depth, num_heads, mlp_ratio,
    time_conditioning, dtype}, train.loss, sample.{sampler, num_steps, options, temperature,
    top_p}, seed.
    """

    unit = "char"
    metric = "elbo"
    sampler_options = staticmethod(dd.sampler_options)

    def __init__(self, config):
        self.source = build_source(config.data, config.seed, kind="tokens", task=config.task)
        self.seq_len = self.source.example_shape[0]
        self.vocab_size = self.source.tokenizer.vocab_size
        self.process = make_discrete_process(config.process, self.vocab_size)
        self.prediction = config.discrete.prediction
        if self.prediction not in dd.PREDICTIONS:
            raise ValueError(
                f"discrete.prediction={self.prediction!r} is not allowed; allowed values: "
                f"{', '.join(map(repr, dd.PREDICTIONS))}"
            )
        self.loss_fn = dd.loss_fn(config.train.loss)
        if config.train.loss == "masked_elbo" and self.process.mask_id is None:
            raise ValueError(
                f"train.loss='masked_elbo' needs process.name='masked', got {config.process.name!r}"
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
            )

        self.model_def, self.init_params = ModelDef.create(build, config.seed)

    def model_fn(self, params):
        """`(tokens: [B, L] int32, t: [B]) -> [B, L, V]` in the `discrete.prediction` form."""
        module = self.model_def.module(params)
        return lambda tokens, t: module(tokens, t)

    def loss(self, params, key, batch):
        """Mean training loss in nats per token (a negative ELBO for the bound losses)."""
        nats = self.loss_fn(
            key, self.process, self.model_fn(params), batch, prediction=self.prediction
        )
        per_token = jnp.mean(nats) / self.seq_len
        return per_token, {"bits_per_char": per_token / math.log(2.0)}

    def eval_nats(self, params, key, batch, num_time_samples: int):
        """`[B]` negative ELBO in nats per sequence (`num_time_samples` time samples each)."""
        return dd.elbo(
            key,
            self.process,
            self.model_fn(params),
            batch,
            prediction=self.prediction,
            num_samples=num_time_samples,
        )

    def tokens_per_example(self) -> int:
        """Units (characters) per example, for bits-per-unit and tokens/s."""
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
