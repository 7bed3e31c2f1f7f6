"""Image and text datasets from TFDS through `tfds.data_source` (random access; no TensorFlow).

`tfds.data_source` reads datasets prepared in the `array_record` (or parquet) file format from a
local `data_dir`; nothing is downloaded here (`download=False`). Prepare a dataset once, on any
machine with TensorFlow and network access:

    tfds build mnist --data_dir=/path/to/tfds --file_format=array_record

and point `data_dir` at that directory (copy it to the training machine if needed).

Images are uint8 `[H, W, C]`; the pipelines return float32 NHWC batches scaled to [-1, 1] by
`x / 127.5 - 1` (exactly invertible: `unscale_images`). Training pipelines shuffle with a seed
(a fresh permutation per epoch) and repeat forever; each process reads its block of every global
batch (see `image_dataset`), so batches are deterministic per (seed, index) and resumable from the
grain iterator state. Text documents are tokenised, followed by EOS (or a newline) and packed
into consecutive windows without padding (`text_dataset`).
"""

from __future__ import annotations

import os

import grain
import numpy as np

from diffax.data.packing import concat_and_chunk

#: Image datasets known to work (fixed-size uint8 images under the "image" feature); any other
#: TFDS builder name is accepted too, if its images have a fixed shape.
KNOWN_IMAGE_DATASETS = (
    "mnist",
    "fashion_mnist",
    "kmnist",
    "cifar10",
    "cifar100",
    "svhn_cropped",
)


def scale_images(images: np.ndarray) -> np.ndarray:
    """uint8 images in [0, 255] -> float32 in [-1, 1] (`x / 127.5 - 1`), any shape."""
    return np.asarray(images, np.float32) / 127.5 - 1.0


def unscale_images(images) -> np.ndarray:
    """Inverse of `scale_images`: float in [-1, 1] -> uint8 (rounded, clipped), any shape."""
    return np.clip(np.round((np.asarray(images, np.float32) + 1.0) * 127.5), 0, 255).astype(
        np.uint8
    )


def is_tfds_dataset(name: str) -> bool:
    """Whether `name` (optionally "name/config:version") is a TFDS builder shipped with TFDS.

    Community datasets are not listed: their index would need the network.
    """
    import tensorflow_datasets as tfds

    base = name.split(":")[0].split("/")[0]
    return base in tfds.list_builders(with_community_datasets=False)


def _check_name(name: str) -> None:
    if not is_tfds_dataset(name):
        raise ValueError(
            f"unknown TFDS dataset {name!r} for argument 'name'; known image datasets: "
            f"{', '.join(KNOWN_IMAGE_DATASETS)} (or any name in tfds.list_builders())"
        )


def tfds_source(name: str, *, split: str, data_dir: str):
    """A random-access TFDS source of `name`/`split` read from `data_dir` (never downloads).

    Args:
      name: TFDS builder name, optionally with config/version ("mnist", "lm1b", "cifar10:3.0.2").
      split: TFDS split spec ("train", "test", "train[:90%]", ...).
      data_dir: directory holding the prepared dataset (array_record format).

    Returns:
      The source: `len(source)`, `source[i]` -> feature dict, `source.dataset_info`.

    Raises:
      ValueError: unknown name, empty or missing `data_dir`, or the dataset is not prepared there.
    """
    import tensorflow_datasets as tfds

    _check_name(name)
    if not data_dir:
        raise ValueError(
            f"data_dir is empty: set it (config: data.data_dir) to the directory holding the "
            f"prepared TFDS dataset {name!r} (`tfds build {name} --data_dir=DIR "
            "--file_format=array_record`)"
        )
    if not os.path.isdir(data_dir):
        raise ValueError(f"data_dir={data_dir!r} (config: data.data_dir) is not a directory")
    try:
        return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except (ValueError, RuntimeError, AssertionError, FileNotFoundError, OSError) as e:
        raise ValueError(
            f"cannot read TFDS dataset {name!r} split {split!r} from data_dir={data_dir!r}: "
            f"prepare it there with `tfds build {name} --data_dir={data_dir} "
            f"--file_format=array_record` ({type(e).__name__}: {str(e).splitlines()[0]})"
        ) from None


def image_source(name: str, *, split: str, data_dir: str, image_key: str = "image"):
    """`tfds_source` checked for a fixed-shape image feature.

    Returns:
      `(source, image_shape)` with `image_shape = (H, W, C)`.

    Raises:
      ValueError: as `tfds_source`, or no fixed-shape image feature `image_key`.
    """
    source = tfds_source(name, split=split, data_dir=data_dir)
    features = source.dataset_info.features
    if image_key not in features:
        raise ValueError(
            f"TFDS dataset {name!r} has no feature {image_key!r}; features: {', '.join(features)}"
        )
    shape = tuple(features[image_key].shape)
    if len(shape) != 3 or any(s is None for s in shape):
        raise ValueError(
            f"TFDS dataset {name!r}: images of variable shape {shape} are not supported"
        )
    return source, shape


def text_source(name: str, *, split: str, data_dir: str, text_key: str = "text"):
    """`tfds_source` checked for a text feature (e.g. "lm1b" with feature "text")."""
    source = tfds_source(name, split=split, data_dir=data_dir)
    features = source.dataset_info.features
    if text_key not in features:
        raise ValueError(
            f"TFDS dataset {name!r} has no feature {text_key!r} (config: data.text_key); "
            f"features: {', '.join(features)}"
        )
    return source


class _Lookup:
    """Element j of process p's stream: `transform` of its example in the global order."""

    def __init__(self, base: grain.MapDataset, batch_size, shard_index, shard_count, transform):
        self.base, self.batch_size, self.transform = base, batch_size, transform
        self.first, self.global_batch = shard_index * batch_size, batch_size * shard_count

    def __call__(self, j: int):
        k, r = divmod(int(j), self.batch_size)
        return self.transform(self.base[k * self.global_batch + self.first + r])


def ordered_dataset(
    source,
    batch_size: int,
    transform,
    *,
    seed: int,
    shuffle: bool = True,
    repeat: bool = True,
    shard_index: int = 0,
    shard_count: int = 1,
) -> grain.MapDataset:
    """Batches of `transform(example)` in a seeded global order, each process reading its block.

    The global order is: shuffle (seeded, a fresh permutation every epoch), then repeat (forever,
    if `repeat`). With P processes and per-process batch b, global batch k is elements
    kbP .. (k + 1)bP - 1 of that order and process p reads its contiguous block starting at
    kbP + pb (the convention of `diffax.data.pipeline`), so the assembled global batch does not
    depend on P. Incomplete global batches are dropped.

    Args:
      source: a random-access source (`len`, `__getitem__`; a TFDS data source or a list).
      batch_size: per-process batch size.
      transform: example -> array of a fixed shape.
      seed: shuffle seed (0 <= seed < 2**32).
      shuffle: shuffle the examples.
      repeat: repeat forever (training); False for one pass (evaluation).
      shard_index, shard_count: this process's block of each global batch.

    Returns:
      A `grain.MapDataset` (call `.to_iter_dataset()` for a checkpointable iterator).
    """
    if not 0 <= shard_index < shard_count:
        raise ValueError(f"shard_index={shard_index} must lie in [0, shard_count={shard_count})")
    base = grain.MapDataset.source(source)
    if shuffle:
        base = base.shuffle(seed=seed)
    if repeat:
        base = base.repeat()
    num_batches = len(base) // (batch_size * shard_count)
    if num_batches == 0:
        raise ValueError(
            f"the split has {len(base)} examples, fewer than one global batch of "
            f"{batch_size * shard_count}"
        )
    lookup = _Lookup(base, batch_size, shard_index, shard_count, transform)
    ds = grain.MapDataset.range(0, num_batches * batch_size).map(lookup)
    return ds.batch(batch_size, drop_remainder=True)


def image_dataset(
    source,
    batch_size: int,
    *,
    seed: int,
    shuffle: bool = True,
    repeat: bool = True,
    shard_index: int = 0,
    shard_count: int = 1,
    image_key: str = "image",
) -> grain.MapDataset:
    """A grain pipeline of float32 `[batch_size, H, W, C]` batches in [-1, 1] from a TFDS source.

    Order, repetition and per-process blocks as in `ordered_dataset`.

    Args:
      source: a random-access source (e.g. from `image_source`; a list of dicts works too).
      batch_size: per-process batch size.
      seed: shuffle seed (0 <= seed < 2**32).
      shuffle: shuffle the examples.
      repeat: repeat forever (training); False for one pass (evaluation).
      shard_index, shard_count: this process's block of each global batch.
      image_key: the feature holding the images.

    Returns:
      A `grain.MapDataset` (call `.to_iter_dataset()` for a checkpointable iterator).
    """
    return ordered_dataset(
        source,
        batch_size,
        lambda example: scale_images(example[image_key]),
        seed=seed,
        shuffle=shuffle,
        repeat=repeat,
        shard_index=shard_index,
        shard_count=shard_count,
    )


def document_end_ids(tokenizer) -> np.ndarray:
    """The ids appended to every document before concatenation.

    `[eos_id]` when the tokenizer has an EOS token; otherwise the encoding of a newline (the
    byte tokenizer: byte 10; text8: its space, id 26), a separator that marks no boundary.

    Raises:
      ValueError: the tokenizer has no EOS token and encodes a newline to nothing.
    """
    if tokenizer.eos_id is not None:
        return np.array([tokenizer.eos_id], np.int32)
    ids = np.asarray(tokenizer.encode("\n"), np.int32)
    if ids.size == 0:
        raise ValueError(
            "the tokenizer has no EOS token and encodes a newline to nothing: documents could "
            "not be separated; use a tokenizer file with an EOS token (data.tokenizer_path)"
        )
    return ids


class DocumentEncoder:
    """A TFDS example -> its tokenised text followed by `document_end_ids(tokenizer)`.

    Args:
      tokenizer: the tokenizer.
      text_key: the text feature (str or UTF-8 bytes).
    """

    def __init__(self, tokenizer, text_key: str = "text"):
        self.tokenizer, self.text_key = tokenizer, text_key
        self.end = document_end_ids(tokenizer)

    def __call__(self, example) -> np.ndarray:
        text = example[self.text_key]
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        ids = np.asarray(self.tokenizer.encode(str(text)), np.int32)
        return np.concatenate([ids, self.end])


def text_dataset(
    source,
    tokenizer,
    seq_len: int,
    batch_size: int,
    *,
    seed: int,
    text_key: str = "text",
    shuffle: bool = True,
    repeat: bool = True,
    shard_index: int = 0,
    shard_count: int = 1,
) -> grain.IterDataset:
    """`[batch_size, seq_len]` int32 batches of packed documents (e.g. LM1B sentences).

    The global document order is: shuffle (seeded, a fresh permutation every epoch), then repeat
    (forever, if `repeat`). Process p of P takes documents p, p + P, p + 2P, ... of that order,
    tokenises each, appends `document_end_ids` (EOS, or a newline without one), concatenates
    them and cuts the stream into consecutive length-`seq_len` windows (`concat_and_chunk`): no
    padding, no truncation; a window may hold the end of one document and the start of the next.
    The iterator state resumes at the exact next token.

    Args:
      source: a random-access source of examples (a TFDS data source or a list of dicts).
      tokenizer: the tokenizer (`eos_id` decides the document separator).
      seq_len: window length L.
      batch_size: per-process batch size (an incomplete last batch is dropped).
      seed: shuffle seed (0 <= seed < 2**32).
      text_key: the text feature (str or UTF-8 bytes).
      shuffle: shuffle the documents.
      repeat: repeat forever (training); False for one pass (evaluation).
      shard_index, shard_count: this process and the number of processes.

    Returns:
      A `grain.IterDataset` (checkpointable iterator).
    """
    if not 0 <= shard_index < shard_count:
        raise ValueError(f"shard_index={shard_index} must lie in [0, shard_count={shard_count})")
    if len(source) < shard_count:
        raise ValueError(
            f"the split has {len(source)} documents, fewer than the {shard_count} processes"
        )
    base = grain.MapDataset.source(source)
    if shuffle:
        base = base.shuffle(seed=seed)
    if repeat:
        base = base.repeat()
    documents = base[shard_index::shard_count].map(DocumentEncoder(tokenizer, text_key))
    windows = concat_and_chunk(documents.to_iter_dataset(), seq_len)
    return windows.batch(batch_size, drop_remainder=True)
