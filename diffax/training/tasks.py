"""Tasks: what is trained (data + forward process + network + objective) for the one train loop.

A task turns a config into the pieces the loop needs: a `ModelDef` and parameter initialiser, a
per-process grain dataset, a loss, a held-out evaluation in bits per unit, and a sampler. Tasks are
resolved by name (`config.task`) through the `tasks` registry.
"""

from __future__ import annotations

import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import diffax.discrete as dd
from diffax.core import Registry
from diffax.data import (
    heldout_batches,
    load_corpus,
    text_dataset,
    text_source,
    tokenizers,
    train_dataset,
    unigram_entropy_bits,
)
from diffax.data.pipeline import indexed_dataset, with_workers
from diffax.data.synthetic import MarkovChainSource, entropy_bits
from diffax.data.tokenizers import CharTokenizer
from diffax.nn import DiffusionTransformer
from diffax.training.state import ModelDef

tasks: Registry = Registry("task")

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(name: str):
    """The jnp dtype for `model.dtype` ("float32" or "bfloat16")."""
    if name not in _DTYPES:
        raise ValueError(
            f"model.dtype={name!r} is not allowed; allowed values: {', '.join(_DTYPES)}"
        )
    return _DTYPES[name]


def make_discrete_process(process_config, vocab_size: int):
    """A `Masked` or `Uniform` process with a named schedule from the `process` config section.

    Schedule parameters: `process.schedule_eps` ("loglinear"), `process.sigma_min` and
    `process.sigma_max` ("geometric"), `process.schedule_power` ("polynomial").
    """
    name, sched = process_config.name, process_config.schedule
    schedule_cls = dd.schedules.get(sched, "process.schedule")
    kwargs = {
        "loglinear": {"eps": process_config.schedule_eps},
        "geometric": {
            "sigma_min": process_config.sigma_min,
            "sigma_max": process_config.sigma_max,
        },
        "polynomial": {"power": process_config.schedule_power},
    }.get(sched, {})
    if name not in ("masked", "uniform"):
        raise ValueError(
            f"process.name={name!r} is not supported for text; allowed values: 'masked', 'uniform'"
        )
    return dd.processes.get(name, "process.name")(vocab_size, schedule_cls(**kwargs))


@tasks.register("text_diffusion")
class TextDiffusionTask:
    """Discrete diffusion on character/byte text with a DiT-style transformer.

    Config keys used: data.{source, path, tokenizer, seq_len, heldout_fraction, num_workers},
    data.{dataset, data_dir, train_split, eval_split, text_key} (source "tfds", e.g. LM1B),
    process.{name, schedule, ...}, discrete.prediction,
    model.{dim, depth, num_heads, mlp_ratio, time_conditioning, dtype}, train.loss,
    eval.num_samples, sample.{sampler, num_steps, temperature, top_p}, seed.
    """

    unit = "char"
    metric = "elbo"  # what eval reports: "elbo" (a bound) or "nll"

    def __init__(self, config):
        self.config = config
        data = config.data
        self.seq_len = data.seq_len
        if data.source == "markov":
            # Synthetic sequences with a known entropy (the ELBO's floor).
            self.corpus = None
            self.markov = MarkovChainSource(
                data.markov_vocab_size, data.seq_len, config.seed, data.markov_concentration
            )
            alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
            if data.markov_vocab_size > len(alphabet):
                raise ValueError(f"data.markov_vocab_size must be <= {len(alphabet)}")
            self.tokenizer = CharTokenizer(alphabet[: data.markov_vocab_size])
        elif data.source == "tfds":
            # One example (e.g. an LM1B sentence) per sequence, truncated or padded with spaces.
            if data.tokenizer == "char":
                raise ValueError(
                    "data.tokenizer='char' needs the whole corpus to fit its alphabet; with "
                    "data.source='tfds' use 'byte', 'text8' or a registered tokenizer"
                )
            self.corpus = None
            self.tokenizer = tokenizers.get(data.tokenizer, "data.tokenizer")()
            self.pad_id = int(self.tokenizer.encode(" ")[0])
            self.tfds_sources = {
                split: text_source(
                    data.dataset, split=split, data_dir=data.data_dir, text_key=data.text_key
                )
                for split in (data.train_split, data.eval_split)
            }
        else:
            self.corpus = load_corpus(
                data.source,
                path=data.path,
                tokenizer=data.tokenizer,
                heldout_fraction=data.heldout_fraction,
            )
            self.tokenizer = self.corpus.tokenizer
        self.vocab_size = self.tokenizer.vocab_size
        self.process = make_discrete_process(config.process, self.vocab_size)
        self.prediction = config.discrete.prediction
        dd.parameterizations.check_prediction(self.prediction)
        self.loss_fn = dd.loss_fn(config.train.loss)
        if config.train.loss == "masked_elbo" and not isinstance(self.process, dd.Masked):
            raise ValueError(
                f"train.loss='masked_elbo' needs process.name='masked', got {config.process.name!r}"
            )
        dd.samplers.get(config.sample.sampler, "sample.sampler")
        # Only options that differ from the neutral value are passed: not every sampler has all.
        self.sample_options = {"temperature": config.sample.temperature}
        if config.sample.top_p < 1.0:
            self.sample_options["top_p"] = config.sample.top_p
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

    # -- data ---------------------------------------------------------------------------------
    def _tfds_batches(self, split, batch_size, **kwargs):
        d = self.config.data
        return text_dataset(
            self.tfds_sources[split],
            self.tokenizer,
            self.seq_len,
            batch_size,
            seed=self.config.seed,
            pad_id=self.pad_id,
            text_key=d.text_key,
            **kwargs,
        )

    def train_dataset(self, batch_per_process: int, shard_index: int, shard_count: int):
        """Infinite per-process grain dataset of `[batch_per_process, seq_len]` int32 batches."""
        if self.config.data.source == "markov":
            return indexed_dataset(
                self.markov,
                batch_per_process,
                shard_index=shard_index,
                shard_count=shard_count,
                num_workers=self.config.data.num_workers,
            )
        if self.corpus is None:
            ds = self._tfds_batches(
                self.config.data.train_split,
                batch_per_process,
                shard_index=shard_index,
                shard_count=shard_count,
            )
            return with_workers(ds.to_iter_dataset(), self.config.data.num_workers)
        return train_dataset(
            self.corpus.train,
            self.seq_len,
            batch_per_process,
            seed=self.config.seed,
            shard_index=shard_index,
            shard_count=shard_count,
            num_workers=self.config.data.num_workers,
        )

    def eval_batches(self, batch_size: int) -> list[np.ndarray]:
        """Held-out batches: non-overlapping windows in order (TFDS: eval-split examples)."""
        if self.config.data.source == "markov":
            # Indices from 2^41 on never occur in training (training uses indices < 2^40).
            num = batch_size * (self.config.eval.max_batches or 16)
            seqs = np.stack([self.markov(2**41 + i) for i in range(num)])
            return [seqs[i : i + batch_size] for i in range(0, num, batch_size)]
        if self.corpus is None:
            ds = self._tfds_batches(
                self.config.data.eval_split, batch_size, shuffle=False, repeat=False
            )
            limit = self.config.eval.max_batches or len(ds)
            return [ds[i] for i in range(min(limit, len(ds)))]
        return heldout_batches(self.corpus.heldout, self.seq_len, batch_size)

    def baselines(self) -> dict[str, float]:
        """Context-free reference: the unigram entropy of the held-out text, bits per char."""
        if self.config.data.source == "markov":
            return {
                "unigram_entropy": float(entropy_bits(self.markov.stationary)),
                "true_entropy": self.markov.entropy_bits_per_token(),
            }
        if self.corpus is None:
            heldout = np.concatenate([b.ravel() for b in self.eval_batches(self.seq_len)])
        else:
            heldout = self.corpus.heldout
        return {"unigram_entropy": unigram_entropy_bits(heldout, self.vocab_size)}

    # -- objective ----------------------------------------------------------------------------
    def _model_fn(self, params):
        module = self.model_def.module(params)
        return lambda tokens, t: module(tokens, t)

    def loss(self, params, key, batch):
        """Mean training loss in nats per token (a negative ELBO for the bound losses)."""
        nats = self.loss_fn(
            key, self.process, self._model_fn(params), batch, prediction=self.prediction
        )
        per_token = jnp.mean(nats) / self.seq_len
        return per_token, {"bits_per_char": per_token / math.log(2.0)}

    def eval_nats(self, params, key, batch, num_samples: int):
        """`[B]` negative ELBO in nats per sequence (`num_samples` time samples each)."""
        return dd.elbo(
            key,
            self.process,
            self._model_fn(params),
            batch,
            prediction=self.prediction,
            num_samples=num_samples,
        )

    def tokens_per_example(self) -> int:
        """Units (characters) per example, for bits-per-unit and tokens/s."""
        return self.seq_len

    # -- sampling -----------------------------------------------------------------------------
    def sample(self, params, key, num: int):
        """`[num, seq_len]` int32 samples and the sampler info."""
        s = self.config.sample
        return dd.sample(
            key,
            self.process,
            self._model_fn(params),
            (num, self.seq_len),
            sampler=s.sampler,
            num_steps=s.num_steps,
            prediction=self.prediction,
            **self.sample_options,
        )

    def write_samples(
        self, samples: np.ndarray, directory: str, step: int
    ) -> tuple[str, list[str]]:
        """Decodes samples to text, one per line, into `directory/samples_{step}.txt`."""
        lines = [self.tokenizer.decode(row).replace("\n", "\\n") for row in samples]
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, f"samples_{step:08d}.txt")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path, lines


def build_task(config) -> Any:
    """The task named by `config.task`."""
    return tasks.get(config.task, "task")(config)


def global_array(local: np.ndarray, sharding) -> jax.Array:
    """Assembles per-process host data into one global array with `sharding`."""
    return jax.make_array_from_process_local_data(sharding, np.asarray(local))
