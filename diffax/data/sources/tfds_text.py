"""Source "tfds": a TFDS text dataset (e.g. LM1B), one example per sequence."""

from __future__ import annotations

import numpy as np

from diffax.data.pipeline import with_workers
from diffax.data.sources.base import SOURCES
from diffax.data.sources.sample_files import write_text_samples
from diffax.data.text import unigram_entropy_bits
from diffax.data.tfds_source import text_dataset, text_source
from diffax.data.tokenizers import TOKENIZERS

# The unigram baseline reads at most this many eval batches of L examples (not a whole split).
_BASELINE_BATCHES = 64


@SOURCES.register("tfds")
class TfdsTextSource:
    """Examples of the text feature of a TFDS dataset, truncated or padded with spaces to L ids.

    Args:
      dataset: TFDS builder name ("lm1b", ...).
      data_dir: directory holding the prepared (array_record) dataset; nothing is downloaded.
      train_split, eval_split: TFDS split specs.
      tokenizer_name: a registered tokenizer that needs no fitting ("byte", "text8", ...).
      seq_len: sequence length L.
      seed: shuffle seed.
      text_key: the text feature.
      num_workers: grain worker processes building training batches.
    """

    kind = "tokens"

    def __init__(
        self,
        dataset: str,
        *,
        data_dir: str,
        train_split: str,
        eval_split: str,
        tokenizer_name: str,
        seq_len: int,
        seed: int,
        text_key: str = "text",
        num_workers: int = 0,
    ):
        if tokenizer_name == "char":
            raise ValueError(
                "data.tokenizer='char' needs the whole corpus to fit its alphabet; with "
                "data.source='tfds' use 'byte', 'text8' or a registered tokenizer"
            )
        self.tokenizer = TOKENIZERS.get(tokenizer_name, "data.tokenizer")()
        self.pad_id = int(self.tokenizer.encode(" ")[0])
        self.example_shape = (seq_len,)
        self.seed, self.text_key, self.num_workers = seed, text_key, num_workers
        self.train_source = text_source(
            dataset, split=train_split, data_dir=data_dir, text_key=text_key
        )
        self.eval_source = text_source(
            dataset, split=eval_split, data_dir=data_dir, text_key=text_key
        )

    @classmethod
    def from_config(cls, data, seed: int) -> TfdsTextSource:
        """Reads `data.{dataset, data_dir, train_split, eval_split, tokenizer, seq_len, ...}`."""
        return cls(
            data.dataset,
            data_dir=data.data_dir,
            train_split=data.train_split,
            eval_split=data.eval_split,
            tokenizer_name=data.tokenizer,
            seq_len=data.seq_len,
            seed=seed,
            text_key=data.text_key,
            num_workers=data.num_workers,
        )

    def _batches(self, source, batch_size: int, **kwargs):
        return text_dataset(
            source,
            self.tokenizer,
            self.example_shape[0],
            batch_size,
            seed=self.seed,
            pad_id=self.pad_id,
            text_key=self.text_key,
            **kwargs,
        )

    def train_dataset(self, batch_per_process: int, shard_index: int, shard_count: int):
        """Infinite `[batch_per_process, L]` int32 batches of shuffled training examples."""
        ds = self._batches(
            self.train_source, batch_per_process, shard_index=shard_index, shard_count=shard_count
        )
        return with_workers(ds.to_iter_dataset(), self.num_workers)

    def eval_batches(self, batch_size: int, max_batches: int) -> list[np.ndarray]:
        """Eval-split examples in order (`max_batches` 0: the whole split)."""
        ds = self._batches(self.eval_source, batch_size, shuffle=False, repeat=False)
        limit = min(max_batches, len(ds)) if max_batches > 0 else len(ds)
        return [ds[i] for i in range(limit)]

    def baselines(self) -> dict[str, float]:
        """Unigram entropy (bits per token) of the first (up to 64 L) eval-split examples."""
        seq_len = self.example_shape[0]
        batches = self.eval_batches(seq_len, _BASELINE_BATCHES)
        heldout = np.concatenate([b.ravel() for b in batches])
        return {"unigram_entropy": unigram_entropy_bits(heldout, self.tokenizer.vocab_size)}

    def write_samples(self, samples: np.ndarray, directory: str, step: int):
        """Decoded text, one sample per line, in `samples_{step}.txt`."""
        return write_text_samples(self.tokenizer, samples, directory, step)
