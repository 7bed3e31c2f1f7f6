"""Sources over one tokenised text stream: random training windows, held-out windows in order.

`builtin_text` and `text_file` are the two registered sources of this kind; they differ only in
where the text comes from.
"""

from __future__ import annotations

import numpy as np

from diffax.data.pipeline import heldout_batches, train_dataset
from diffax.data.sources.sample_files import write_text_samples
from diffax.data.text import TokenCorpus, unigram_entropy_bits


class CorpusSource:
    """Length-`seq_len` windows of a `TokenCorpus` (train: random windows; eval: in order).

    Args:
      corpus: the tokenised corpus with its train / held-out split.
      seq_len: window length L.
      seed: data seed (window positions are a function of (seed, example index)).
      num_workers: grain worker processes building training batches (0: in this process).
    """

    kind = "tokens"

    def __init__(self, corpus: TokenCorpus, seq_len: int, seed: int, num_workers: int = 0):
        self.corpus, self.seed, self.num_workers = corpus, seed, num_workers
        self.tokenizer = corpus.tokenizer
        self.example_shape = (seq_len,)

    @classmethod
    def from_config(cls, data, seed: int) -> CorpusSource:
        """Reads `data.{source, path, tokenizer, heldout_fraction, seq_len, num_workers}`."""
        from diffax.data.text import load_corpus

        corpus = load_corpus(
            data.source,
            path=data.path,
            tokenizer=data.tokenizer,
            heldout_fraction=data.heldout_fraction,
        )
        return cls(corpus, data.seq_len, seed, data.num_workers)

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
