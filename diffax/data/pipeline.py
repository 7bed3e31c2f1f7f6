"""grain input pipelines.

Training batches of token windows are a deterministic function of (seed, example index): element i
is the window starting at a position drawn from `np.random.default_rng((seed, i))`. The pipeline is
therefore exactly resumable from the grain iterator state (the next index) and needs no epoch
bookkeeping. With P processes, global batch k holds examples kB .. kB + B - 1 in order and process p
reads the contiguous block p B/P .. (p + 1) B/P - 1 of it, so the assembled global batch is the
same whatever the number of processes.
"""

from __future__ import annotations

import grain
import numpy as np
from absl import flags

# Indices run far beyond any training run; grain datasets are lazy so this costs nothing.
_NUM_WINDOWS = 2**40


class RandomWindows:
    """Maps an example index to a random length-`seq_len` window of a 1-D id stream."""

    def __init__(self, ids: np.ndarray, seq_len: int, seed: int):
        if len(ids) < seq_len:
            raise ValueError(
                f"the token stream has {len(ids)} ids, fewer than data.seq_len={seq_len}"
            )
        self.ids, self.seq_len, self.seed = ids, seq_len, seed

    def __call__(self, index: int) -> np.ndarray:
        start = np.random.default_rng((self.seed, int(index))).integers(
            0, len(self.ids) - self.seq_len + 1
        )
        return self.ids[start : start + self.seq_len]


def train_dataset(
    ids: np.ndarray,
    seq_len: int,
    batch_size: int,
    *,
    seed: int,
    shard_index: int = 0,
    shard_count: int = 1,
    num_workers: int = 0,
) -> grain.IterDataset:
    """An infinite grain dataset of `[batch_size, seq_len]` int32 windows of `ids`, one process.

    Args:
      ids: 1-D int32 training stream.
      seq_len: window length.
      batch_size: per-process batch size.
      seed: data seed.
      shard_index, shard_count: this process's block of each global batch.
      num_workers: if > 0, build batches in that many grain worker processes (the iterator state
        stays checkpointable).
    """
    return indexed_dataset(
        RandomWindows(ids, seq_len, seed),
        batch_size,
        shard_index=shard_index,
        shard_count=shard_count,
        num_workers=num_workers,
    )


def indexed_dataset(
    example_fn,
    batch_size: int,
    *,
    shard_index: int = 0,
    shard_count: int = 1,
    num_workers: int = 0,
) -> grain.IterDataset:
    """Infinite batches of `example_fn(global_index)`, each process reading its block.

    Args:
      example_fn: global example index -> fixed-shape array (a pure function of the index).
      batch_size: per-process batch size.
      shard_index, shard_count: this process's block of each global batch.
      num_workers: grain worker processes (0: build batches in this process).
    """
    if not 0 <= shard_index < shard_count:
        raise ValueError(f"shard_index={shard_index} must lie in [0, shard_count={shard_count})")
    global_batch = batch_size * shard_count

    def global_index(j: int) -> int:
        return (j // batch_size) * global_batch + shard_index * batch_size + j % batch_size

    ds = grain.MapDataset.range(0, _NUM_WINDOWS // shard_count).map(global_index)
    ds = ds.map(example_fn).batch(batch_size, drop_remainder=True)
    return with_workers(ds.to_iter_dataset(), num_workers)


def with_workers(ds: grain.IterDataset, num_workers: int) -> grain.IterDataset:
    """`ds` built in `num_workers` grain worker processes (unchanged for 0); stays resumable."""
    if num_workers <= 0:
        return ds
    if not flags.FLAGS.is_parsed():
        # grain's worker processes read absl flags; outside an absl app their defaults apply.
        flags.FLAGS.mark_as_parsed()
    return ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))


def heldout_batches(ids: np.ndarray, seq_len: int, batch_size: int) -> list[np.ndarray]:
    """Non-overlapping windows of the held-out stream, in order, as full batches.

    The tail that does not fill a whole batch is dropped (documented in eval output via counts).
    """
    n = len(ids) // seq_len
    if n < batch_size:
        raise ValueError(
            f"held-out text has {n} windows of length {seq_len}, fewer than one batch of "
            f"{batch_size}; lower eval.batch_size or data.seq_len"
        )
    chunks = ids[: n * seq_len].reshape(n, seq_len)
    return [chunks[i : i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]
