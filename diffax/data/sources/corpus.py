"""Sources over one tokenised text stream: random training windows, held-out windows in order.

`builtin_text` and `text_file` are the two registered sources of this kind; they differ only in
where the text comes from. The text is tokenised the first time training or evaluation data is
asked for (sampling never tokenises it), in every process: corpora larger than a few hundred MB
belong in prepared shards (`experiments/prepare_text.py`, source "shards").
"""

from __future__ import annotations

import functools

import numpy as np

from diffax.data.pipeline import heldout_batches, train_dataset
from diffax.data.sources.sample_files import write_text_samples
from diffax.data.text import (
    TokenCorpus,
    corpus_documents,
    make_tokenizer,
    tokenize_corpus,
    unigram_entropy_bits,
)
from diffax.data.tokenizers import Tokenizer


class CorpusSource:
    """Length-`seq_len` windows of a tokenised corpus (train: random windows; eval: in order).

    With a tokenizer that has an EOS token (`data.tokenizer_path`) the documents are separated
    by it and `eos_id` is that id (the text task then keeps attention within documents);
    otherwise `eos_id` is None.

    Args:
      corpus: the tokenised corpus with its train / held-out split, or a function returning it
        (called once, when training or evaluation data is first needed).
      seq_len: window length L.
      seed: data seed (window positions are a function of (seed, example index)).
      num_workers: grain worker processes building training batches (0: in this process).
      tokenizer: the corpus's tokenizer (required when `corpus` is a function).
    """

    kind = "tokens"

    def __init__(
        self,
        corpus,
        seq_len: int,
        seed: int,
        num_workers: int = 0,
        tokenizer: Tokenizer | None = None,
    ):
        self._corpus, self.seed, self.num_workers = corpus, seed, num_workers
        self.tokenizer = corpus.tokenizer if isinstance(corpus, TokenCorpus) else tokenizer
        if self.tokenizer is None:
            raise ValueError("tokenizer is required when corpus is a function")
        self.example_shape = (seq_len,)

    @classmethod
    def from_config(cls, data, seed: int) -> CorpusSource:
        """Reads `data.{source, path, tokenizer, tokenizer_path, heldout_fraction, seq_len,
        num_workers}`."""
        documents = corpus_documents(data.source, data.path)
        tokenizer = make_tokenizer(data.tokenizer, "\n".join(documents), data.tokenizer_path)
        fraction = data.heldout_fraction
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"data.heldout_fraction must be in (0, 1), got {fraction}")
        return cls(
            lambda: tokenize_corpus(documents, tokenizer, fraction),
            data.seq_len,
            seed,
            data.num_workers,
            tokenizer=tokenizer,
        )

    @functools.cached_property
    def corpus(self) -> TokenCorpus:
        """The tokenised corpus (tokenised on first use)."""
        return self._corpus if isinstance(self._corpus, TokenCorpus) else self._corpus()

    @property
    def eos_id(self) -> int | None:
        """The end-of-document id of the stream (None: one document, no boundaries)."""
        return self.tokenizer.eos_id

    def train_dataset(self, batch_per_process: int, shard_index: int, shard_count: int):
        """Infinite `[batch_per_process, L]` int32 random windows of the training stream."""
        return train_dataset(
            self.corpus.train,
            self.example_shape[0],
            batch_per_process,
            seed=self.seed,
            shard_index=shard_index,
            shard_count=shard_count,
            num_workers=self.num_workers,
        )

    def eval_batches(self, batch_size: int, max_batches: int) -> list[np.ndarray]:
        """Non-overlapping windows of the held-out stream, in order (`max_batches` 0: all)."""
        batches = heldout_batches(self.corpus.heldout, self.example_shape[0], batch_size)
        return batches[:max_batches] if max_batches > 0 else batches

    def baselines(self) -> dict[str, float]:
        """The unigram entropy of the held-out text, bits per token (a context-free reference)."""
        return {
            "unigram_entropy": unigram_entropy_bits(self.corpus.heldout, self.tokenizer.vocab_size)
        }

    def write_samples(self, samples: np.ndarray, directory: str, step: int):
        """Decoded text, one sample per line, in `samples_{step}.txt`."""
        return write_text_samples(self.tokenizer, samples, directory, step)
