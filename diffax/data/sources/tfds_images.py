"""Source "tfds_images": a TFDS image dataset (MNIST, CIFAR-10, ...) as float32 in [-1, 1]."""

from __future__ import annotations

import numpy as np

from diffax.data.sources.base import SOURCES
from diffax.data.sources.sample_files import sample_stem, write_image_grid
from diffax.data.tfds_source import image_dataset, image_source, unscale_images


@SOURCES.register("tfds_images")
class TfdsImageSource:
    """uint8 images of a TFDS dataset, scaled to float32 NHWC in [-1, 1] (`scale_images`).

    Evaluation is on the discrete 8-bit pixels (`pixel_bits = 8`); the baseline is the 8
    bits/dim of a uniform model. The train split is opened (not read) when the source is built,
    to learn the image shape; the eval split when evaluation first needs it.

    Args:
      dataset: TFDS builder name ("mnist", "cifar10", ...).
      data_dir: directory holding the prepared (array_record) dataset; nothing is downloaded.
      train_split, eval_split: TFDS split specs.
      seed: shuffle seed.
    """

    kind = "vectors"
    pixel_bits = 8

    def __init__(self, dataset: str, *, data_dir: str, train_split: str, eval_split: str, seed):
        self.dataset, self.data_dir, self.eval_split, self.seed = (
            dataset,
            data_dir,
            eval_split,
            seed,
        )
        self.train_source, self.example_shape = image_source(
            dataset, split=train_split, data_dir=data_dir
        )

    @classmethod
    def from_config(cls, data, seed: int) -> TfdsImageSource:
        """Reads `data.{dataset, data_dir, train_split, eval_split}`."""
        return cls(
            data.dataset,
            data_dir=data.data_dir,
            train_split=data.train_split,
            eval_split=data.eval_split,
            seed=seed,
        )

    def train_dataset(self, batch_per_process: int, shard_index: int, shard_count: int):
        """Infinite `[batch_per_process, H, W, C]` float32 batches, shuffled every epoch."""
        return image_dataset(
            self.train_source,
            batch_per_process,
            seed=self.seed,
            shard_index=shard_index,
            shard_count=shard_count,
        ).to_iter_dataset()

    def eval_batches(self, batch_size: int, max_batches: int) -> list[np.ndarray]:
        """The eval split in order (only the first `max_batches` batches are read when > 0)."""
        source, _ = image_source(self.dataset, split=self.eval_split, data_dir=self.data_dir)
        ds = image_dataset(source, batch_size, seed=self.seed, shuffle=False, repeat=False)
        return [ds[i] for i in range(min(len(ds), max_batches) if max_batches > 0 else len(ds))]

    def baselines(self) -> dict[str, float]:
        """A uniform model of 8-bit pixels: 8 bits per dimension."""
        return {"uniform_bits_per_dim": float(self.pixel_bits)}

    def write_samples(self, samples: np.ndarray, directory: str, step: int):
        """`samples_{step}.npy` and a PNG grid; the line is a summary of the values."""
        stem = sample_stem(directory, step)
        samples = np.asarray(samples, np.float32)
        np.save(stem + ".npy", samples)
        write_image_grid(stem + ".png", unscale_images(samples))
        finite = np.isfinite(samples).mean()
        summary = (
            f"{len(samples)} images {samples.shape[1:]}: finite fraction {finite:.3f}, "
            f"mean {np.nanmean(samples):+.3f}, std {np.nanstd(samples):.3f} (clipped for the PNG)"
        )
        return stem + ".png", [summary]
