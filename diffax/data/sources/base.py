"""The data-source interface and the `SOURCES` registry that resolves `config.data.source`.

A source is everything a task needs from its data: per-process training batches, held-out
batches, reference values for the evaluation, and how samples are written. Each source is one
module of `diffax.data.sources`; a task asks `build_source` once, in its constructor, and then
only talks to the object.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import grain
import numpy as np

from diffax.core import Registry
from diffax.data.tokenizers import Tokenizer


@runtime_checkable
class Source(Protocol):
    """What every data source provides.

    Attributes:
      kind: "tokens" (int32 ids, for discrete diffusion) or "vectors" (float32 arrays, for
        Gaussian diffusion).
      example_shape: the shape of one example, e.g. `(L,)` for tokens, `(2,)` for toy points,
        `(H, W, C)` for images.
    """

    kind: str
    example_shape: tuple[int, ...]

    def train_dataset(
        self, batch_per_process: int, shard_index: int, shard_count: int
    ) -> grain.IterDataset:
        """Infinite, checkpointable batches `[batch_per_process, *example_shape]` of one process.

        With P = `shard_count` processes, process `shard_index` reads its contiguous block of
        every global batch, so the assembled global batch does not depend on P.
        """

    def eval_batches(self, batch_size: int, max_batches: int) -> list[np.ndarray]:
        """Held-out global batches `[batch_size, *example_shape]`, in a fixed order.

        At most `max_batches` batches (0: all of the held-out data); a tail short of a batch is
        dropped. Builds no training iterator.
        """

    def baselines(self) -> dict[str, float]:
        """Reference values for the evaluation, in bits per unit (e.g. the unigram entropy)."""

    def write_samples(
        self, samples: np.ndarray, directory: str, step: int
    ) -> tuple[str, list[str]]:
        """Writes `samples: [N, *example_shape]` under `directory`; returns (path, lines).

        The lines are what the run prints and logs (a summary line may come first).
        """


@runtime_checkable
class TokenSource(Source, Protocol):
    """A source of int32 token sequences `[L]` with ids in [0, `tokenizer.vocab_size`).

    Attributes:
      tokenizer: decodes samples; its `vocab_size` is the number of classes.
      eos_id: the id that ends each document in the stream (windows may hold several
        documents), or None when sequences have no document boundaries.
    """

    tokenizer: Tokenizer
    eos_id: int | None


@runtime_checkable
class VectorSource(Source, Protocol):
    """A source of float32 arrays.

    Attributes:
      pixel_bits: None for real-valued data; b for b-bit pixels scaled to [-1, 1] by
        `x / (2^(b-1) - 1/2) - 1`, whose likelihood is reported for the discrete pixels.
    """

    pixel_bits: int | None


class SourceFactory(Protocol):
    """A registered source class: builds the source from the `data` config section."""

    kind: str

    @classmethod
    def from_config(cls, data: Any, seed: int) -> Source:
        """The source for the `data` section (attribute access: `data.seq_len`, ...)."""


SOURCES: Registry[SourceFactory] = Registry("data source")


def build_source(data: Any, seed: int, *, kind: str, task: str) -> Source:
    """The source named by `data.source`, checked to yield `kind` examples for `task`.

    Args:
      data: the `data` config section (read by attribute).
      seed: the run's data seed.
      kind: "tokens" or "vectors", what the task trains on.
      task: the task name, for the error message.

    Raises:
      ValueError: an unknown source name, or a source of the other kind (the message lists the
        sources that fit).
    """
    factory = SOURCES.get(data.source, "data.source")
    if factory.kind != kind:
        allowed = [n for n in SOURCES.names() if SOURCES.get(n).kind == kind]
        raise ValueError(
            f"data.source={data.source!r} yields {factory.kind}, but task {task!r} trains on "
            f"{kind}; allowed values: {', '.join(allowed)}"
        )
    return factory.from_config(data, seed)
