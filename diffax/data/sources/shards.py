"""Source "shards": token shards prepared once by `experiments/prepare_text.py` (`data.path`).

Each of P processes reads only its own training shards, p, p + P, p + 2P, ... (memory-mapped,
never loaded whole), as one stream, cut into consecutive length-L windows in order: no padding,
documents separated by EOS, a window may span documents and shard ends. Window j of process p is
its tokens jL .. (j + 1)L - 1 (modulo its stream length: later epochs repeat the same order), so
the grain iterator state (the next window index) resumes at the exact next token. The global
batch is the concatenation of the processes' batches and depends on P; with S shards, a
multiple of P keeps the processes' shares equal. Evaluation reads the held-out split in order.
The format is described in `diffax.data.token_shards`. `data.path` is a local directory (or a
mounted bucket): the shards are memory-mapped.
"""

from __future__ import annotations

import os

import grain
import numpy as np

from diffax.data.pipeline import with_workers
from diffax.data.sources.base import SOURCES
from diffax.data.sources.sample_files import write_text_samples
from diffax.data.text import unigram_entropy_bits
from diffax.data.token_shards import TokenStream, read_metadata
from diffax.data.tokenizers import file_sha256, load_tokenizer

# Window indices run far beyond any training run; grain datasets are lazy so this costs nothing.
_NUM_WINDOWS = 2**40
# The unigram baseline reads at most this many held-out tokens.
_BASELINE_TOKENS = 2**24


class ConsecutiveWindows:
    """Window index j -> int32 tokens jL .. (j + 1)L - 1 of a `TokenStream`, ids checked < V.

    Args:
      stream: the token stream.
      seq_len: window length L.
      vocab_size: V; a window holding an id >= V raises (a shard unlike its metadata).
    """

    def __init__(self, stream: TokenStream, seq_len: int, vocab_size: int):
        self.stream, self.seq_len, self.vocab_size = stream, seq_len, vocab_size

    def __call__(self, index: int) -> np.ndarray:
        window = self.stream.read(int(index) * self.seq_len, self.seq_len)
        if window.max() >= self.vocab_size:
            raise ValueError(
                f"window {index} holds id {window.max()} >= vocab_size {self.vocab_size}: the "
                "shards do not match their metadata"
            )
        return window


@SOURCES.register("shards")
class ShardsSource:
    """Consecutive length-L windows of prepared token shards (see the module docstring).

    The tokenizer is the copy stored with the shards (checked against its SHA-256); when
    `tokenizer_path` is given it must be the same file. `eos_id` is the shards' EOS id.

    Args:
      directory: the prepared directory (`data.path`).
      seq_len: window length L.
      tokenizer_path: optional tokenizer file (`data.tokenizer_path`) that must match.
      num_workers: grain worker processes building training batches.
    """

    kind = "tokens"

    def __init__(
        self, directory: str, seq_len: int, *, tokenizer_path: str = "", num_workers: int = 0
    ):
        if not directory:
            raise ValueError("data.path is empty: set it to a directory of prepared shards")
        if "://" in directory:
            raise ValueError(
                f"data.path={directory!r}: shards are memory-mapped from a local file system; "
                "copy them to local disk or mount the bucket (e.g. gcsfuse) and pass that path"
            )
        if seq_len < 1:
            raise ValueError(f"data.seq_len must be >= 1, got {seq_len}")
        meta = read_metadata(directory)
        self.directory, self.metadata, self.num_workers = directory, meta, num_workers
        stored = os.path.join(directory, meta["tokenizer_file"])
        if not os.path.isfile(stored) or file_sha256(stored) != meta["tokenizer_sha256"]:
            raise ValueError(
                f"data.path={directory!r}: the tokenizer copy {meta['tokenizer_file']} is "
                "missing or differs from the one the shards were written with"
            )
        if tokenizer_path and file_sha256(tokenizer_path) != meta["tokenizer_sha256"]:
            raise ValueError(
                f"data.tokenizer_path={tokenizer_path!r} is not the tokenizer the shards in "
                f"data.path={directory!r} were written with ({meta['tokenizer_file']}, sha256 "
                f"{meta['tokenizer_sha256'][:12]}...); set data.tokenizer_path='' to use theirs"
            )
        self.tokenizer = load_tokenizer(stored, name="data.path tokenizer")
        if (self.tokenizer.vocab_size, self.tokenizer.eos_id) != (
            meta["vocab_size"],
            meta["eos_id"],
        ):
            raise ValueError(
                f"data.path={directory!r}: the tokenizer has vocab_size "
                f"{self.tokenizer.vocab_size} and eos_id {self.tokenizer.eos_id}, the metadata "
                f"says {meta['vocab_size']} and {meta['eos_id']}"
            )
        self.eos_id = int(meta["eos_id"])
        self.example_shape = (seq_len,)

    @classmethod
    def from_config(cls, data, seed: int) -> ShardsSource:
        """Reads `data.{path, seq_len, tokenizer_path, num_workers}` (a fixed order: no seed)."""
        del seed
        return cls(
            data.path,
            data.seq_len,
            tokenizer_path=data.tokenizer_path,
            num_workers=data.num_workers,
        )

    def _paths(self, split: str) -> list[str]:
        shards = self.metadata["splits"].get(split, [])
        return [os.path.join(self.directory, s["file"]) for s in shards]

    def process_stream(self, shard_index: int, shard_count: int) -> TokenStream:
        """The stream of process `shard_index` of `shard_count`: its shards, p, p + P, ..."""
        paths = self._paths("train")
        if not 0 <= shard_index < shard_count:
            raise ValueError(
                f"shard_index={shard_index} must lie in [0, shard_count={shard_count})"
            )
        if len(paths) < shard_count:
            raise ValueError(
                f"data.path={self.directory!r} has {len(paths)} training shards, fewer than the "
                f"{shard_count} processes; prepare it again with --num_shards a multiple of "
                f"{shard_count}"
            )
        stream = TokenStream(paths[shard_index::shard_count])
        if len(stream) < self.example_shape[0]:
            raise ValueError(
                f"process {shard_index} has {len(stream)} tokens, fewer than data.seq_len="
                f"{self.example_shape[0]}"
            )
        return stream

    def train_dataset(self, batch_per_process: int, shard_index: int, shard_count: int):
        """Infinite `[batch_per_process, L]` int32 consecutive windows of this process's shards.

        Batch k holds windows kB .. (k + 1)B - 1 of the process's stream (B = batch_per_process).
        """
        windows = ConsecutiveWindows(
            self.process_stream(shard_index, shard_count),
            self.example_shape[0],
            self.tokenizer.vocab_size,
        )
        ds = grain.MapDataset.range(0, _NUM_WINDOWS).map(windows)
        ds = ds.batch(batch_per_process, drop_remainder=True)
        return with_workers(ds.to_iter_dataset(), self.num_workers)

    def eval_batches(self, batch_size: int, max_batches: int) -> list[np.ndarray]:
        """Consecutive windows of the held-out split, in order (`max_batches` 0: all).

        Only the tokens of the returned batches are read; the tail short of a batch is dropped.
        """
        paths = self._paths("heldout")
        seq_len = self.example_shape[0]
        stream = TokenStream(paths) if paths else None
        n = (len(stream) // (seq_len * batch_size)) if stream else 0
        if n == 0:
            raise ValueError(
                f"data.path={self.directory!r}: the held-out split has fewer than one batch of "
                f"{batch_size} windows of {seq_len} tokens; lower eval.batch_size or "
                "data.seq_len, or prepare with a larger --heldout_fraction"
            )
        n = min(n, max_batches) if max_batches > 0 else n
        size = batch_size * seq_len
        return [stream.read(k * size, size).reshape(batch_size, seq_len) for k in range(n)]

    def baselines(self) -> dict[str, float]:
        """Unigram entropy (bits per token) of the first (up to 2^24) held-out tokens."""
        paths = self._paths("heldout")
        if not paths:
            return {}
        stream = TokenStream(paths)
        ids = stream.read(0, min(len(stream), _BASELINE_TOKENS))
        return {"unigram_entropy": unigram_entropy_bits(ids, self.tokenizer.vocab_size)}

    def write_samples(self, samples: np.ndarray, directory: str, step: int):
        """Decoded text, one sample per line, in `samples_{step}.txt`."""
        return write_text_samples(self.tokenizer, samples, directory, step)
