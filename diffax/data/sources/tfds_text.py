"""Source "tfds": a TFDS text dataset (e.g. LM1B), documents packed into length-L windows."""

from __future__ import annotations

import numpy as np

from diffax.data.pipeline import with_workers
from diffax.data.sources.base import SOURCES
from diffax.data.sources.sample_files import write_text_samples
from diffax.data.text import make_tokenizer, unigram_entropy_bits
from diffax.data.tfds_source import text_dataset, text_source

# The unigram baseline reads at most about this many eval-split tokens (not a whole split).
_BASELINE_TOKENS = 2**22


@SOURCES.register("tfds")
class TfdsTextSource:
    """The text feature of a TFDS dataset, documents concatenated and cut into length-L windows.

    Each document is followed by the tokenizer's EOS token (then `eos_id` is that id), or by a
    newline when the tokenizer has none (byte: byte 10; text8: a space; `eos_id` is None). No
    padding, no truncation (`diffax.data.text_dataset`). Process p of P reads documents p,
    p + P, ... of the shuffled order, so the global batch depends on P (not its distribution).

    Args:
      dataset: TFDS builder name ("lm1b", ...).
      data_dir: directory holding the prepared (array_record) dataset; nothing is downloaded.
      train_split, eval_split: TFDS split specs.
      tokenizer_name: a registered tokenizer that needs no fitting ("byte", "text8", ...).
      seq_len: sequence length L.
      seed: shuffle seed.
      text_key: the text feature.
      num_workers: grain worker processes building training batches.
      tokenizer_path: a tokenizer file (`data.tokenizer_path`); replaces `tokenizer_name`.
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
        tokenizer_path: str = "",
    ):
        if tokenizer_name == "char" and not tokenizer_path:
            raise ValueError(
                "data.tokenizer='char' needs the whole corpus to fit its alphabet; with "
                "data.source='tfds' use 'byte', 'text8' or data.tokenizer_path"
            )
        self.tokenizer = make_tokenizer(tokenizer_name, path=tokenizer_path)
        self.eos_id = self.tokenizer.eos_id
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
        """Reads `data.{dataset, data_dir, train_split, eval_split, tokenizer, tokenizer_path,
        seq_len, text_key, num_workers}`."""
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
            tokenizer_path=data.tokenizer_path,
        )

    def _batches(self, source, batch_size: int, **kwargs):
        return text_dataset(
            source,
            self.tokenizer,
            self.example_shape[0],
            batch_size,
            seed=self.seed,
            text_key=self.text_key,
            **kwargs,
        )

    def train_dataset(self, batch_per_process: int, shard_index: int, shard_count: int):
        """Infinite `[batch_per_process, L]` int32 batches of packed, shuffled documents."""
        ds = self._batches(
            self.train_source, batch_per_process, shard_index=shard_index, shard_count=shard_count
        )
        return with_workers(ds, self.num_workers)

    def eval_batches(self, batch_size: int, max_batches: int) -> list[np.ndarray]:
        """The eval split's documents in order, packed (`max_batches` 0: the whole split)."""
        batches = []
        for batch in self._batches(self.eval_source, batch_size, shuffle=False, repeat=False):
            batches.append(batch)
            if len(batches) == max_batches:
                break
        if not batches:
            raise ValueError(
                f"the eval split holds fewer than one batch of {batch_size} windows of "
                f"{self.example_shape[0]} tokens; lower eval.batch_size or data.seq_len"
            )
        return batches

    def baselines(self) -> dict[str, float]:
        """Unigram entropy (bits per token) of the first (up to ~4M) eval-split tokens."""
        batches = self.eval_batches(1, max(1, _BASELINE_TOKENS // self.example_shape[0]))
        heldout = np.concatenate([b.ravel() for b in batches])
        return {"unigram_entropy": unigram_entropy_bits(heldout, self.tokenizer.vocab_size)}

    def write_samples(self, samples: np.ndarray, directory: str, step: int):
        """Decoded text, one sample per line, in `samples_{step}.txt`."""
        return write_text_samples(self.tokenizer, samples, directory, step)
