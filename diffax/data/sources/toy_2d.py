"""Source "toy": a 2-D toy distribution with an exact density (`diffax.data.toy`)."""

from __future__ import annotations

import functools
import math

import numpy as np

from diffax.data.sources.base import SOURCES
from diffax.data.sources.sample_files import sample_stem, write_scatter
from diffax.data.tfds_source import KNOWN_IMAGE_DATASETS
from diffax.data.toy import TOY_DISTRIBUTIONS, toy_dataset, toy_heldout


@SOURCES.register("toy")
class ToySource:
    """Points of a toy distribution: training stream 0, held-out stream 1 (disjoint).

    The evaluation baseline is the exact entropy of the data (estimated on the held-out points;
    omitted where the density is 0 somewhere on them). The sample summary gives the sliced
    2-Wasserstein distance to as many true samples, with its two-true-sets floor, and the exact
    data NLL of the samples.

    Args:
      dataset: a registered toy distribution ("gaussian_ring", "checkerboard", ...).
      num_heldout: held-out examples.
      seed: data seed.
    """

    kind = "vectors"
    pixel_bits = None

    def __init__(self, dataset: str, *, num_heldout: int, seed: int):
        if dataset not in TOY_DISTRIBUTIONS:
            raise ValueError(
                f"data.dataset={dataset!r} is not allowed with data.source='toy'; allowed values: "
                f"a toy distribution ({', '.join(TOY_DISTRIBUTIONS.names())}), or a TFDS image "
                f"dataset ({', '.join(KNOWN_IMAGE_DATASETS)}, ...) with data.source='tfds_images'"
            )
        self.dist = TOY_DISTRIBUTIONS.get(dataset)()
        self.example_shape = (self.dist.dim,)
        self.num_heldout, self.seed = num_heldout, seed

    @classmethod
    def from_config(cls, data, seed: int) -> ToySource:
        """Reads `data.{dataset, num_heldout}`."""
        return cls(data.dataset, num_heldout=data.num_heldout, seed=seed)

    def train_dataset(self, batch_per_process: int, shard_index: int, shard_count: int):
        """Infinite `[batch_per_process, 2]` float32 batches of stream 0."""
        return toy_dataset(
            self.dist,
            batch_per_process,
            seed=self.seed,
            shard_index=shard_index,
            shard_count=shard_count,
        )

    @functools.cached_property
    def heldout(self) -> np.ndarray:
        """`[num_heldout, 2]` held-out points."""
        return toy_heldout(self.dist, self.num_heldout, seed=self.seed)

    def eval_batches(self, batch_size: int, max_batches: int) -> list[np.ndarray]:
        """Held-out batches in order (the tail short of a batch is dropped)."""
        x = self.heldout
        n = len(x) // batch_size
        if n == 0:
            raise ValueError(
                f"data.num_heldout={len(x)} is fewer than one batch of eval.batch_size={batch_size}"
            )
        n = min(n, max_batches) if max_batches > 0 else n
        return [x[i * batch_size : (i + 1) * batch_size] for i in range(n)]

    def baselines(self) -> dict[str, float]:
        """The data entropy in bits/dim, from the exact density of the held-out points."""
        logp = self.dist.log_prob(self.heldout)
        if np.all(np.isfinite(logp)):
            nats = -float(np.mean(logp)) / self.dist.dim
            return {"data_entropy_bits_per_dim": nats / math.log(2.0)}
        return {}

    def write_samples(self, samples: np.ndarray, directory: str, step: int):
        """`samples_{step}.npy`, a scatter PNG next to true samples; lines: summary, then points."""
        stem = sample_stem(directory, step)
        samples = np.asarray(samples, np.float32)
        np.save(stem + ".npy", samples)
        write_scatter(stem + ".png", samples, self.dist.sample(self.seed, len(samples), 2))
        rows = [" ".join(f"{v:+.4f}" for v in row) for row in samples]
        return stem + ".png", [self.summary(samples), *rows]

    def summary(self, samples: np.ndarray) -> str:
        """Sliced W2 to true samples (with its two-true-sets floor) and the exact data NLL."""
        import jax
        import jax.numpy as jnp

        import diffax.continuous as dc

        n = len(samples)
        truth = self.dist.sample(self.seed, n, stream=2)
        other = self.dist.sample(self.seed, n, stream=3)
        key = jax.random.key(self.seed)
        sw = float(dc.sliced_wasserstein(key, jnp.asarray(samples), jnp.asarray(truth)))
        floor = float(dc.sliced_wasserstein(key, jnp.asarray(other), jnp.asarray(truth)))
        logp = self.dist.log_prob(samples)
        ok = np.isfinite(logp)
        d = self.dist.dim
        line = (
            f"sliced W2 to {n} true samples: {sw:.4f} (two true sets: {floor:.4f}); "
            f"data NLL of the samples: {-np.mean(logp[ok]) / d:.4f} nats/dim "
            f"(true samples: {-np.mean(self.dist.log_prob(truth)) / d:.4f})"
        )
        if not ok.all():
            line += f"; {ok.mean():.3f} of the samples lie on the support"
        return line
