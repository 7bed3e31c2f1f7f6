"""TFDS image sources through `tfds.data_source`, with `tfds.testing.mock_data` (no TensorFlow).

`mock_data` patches the dataset builders so `tfds.data_source` returns random examples generated
from the builder's feature spec in code (`MockPolicy.USE_CODE`: no metadata files, no download);
the `data_dir` passed to it is replaced by the mock, but `image_source` still requires it to be
an existing directory.
"""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from diffax.data import image_dataset, image_source, scale_images, unscale_images

MOCK = dict(num_examples=12, policy=tfds.testing.MockPolicy.USE_CODE)


@pytest.mark.parametrize(("name", "shape"), [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
def test_mocked_images_are_scaled_nhwc_batches(tmp_path, name, shape):
    with tfds.testing.mock_data(**MOCK):
        source, image_shape = image_source(name, split="train", data_dir=str(tmp_path))
        assert image_shape == shape and len(source) == 12
        batches = list(image_dataset(source, 4, seed=0, shuffle=False, repeat=False))
        raw = np.stack([source[i]["image"] for i in range(12)])
    assert len(batches) == 3
    x = np.concatenate(batches)
    assert x.shape == (12, *shape) and x.dtype == np.float32
    assert x.min() >= -1.0 and x.max() <= 1.0 and x.std() > 0.1
    np.testing.assert_array_equal(unscale_images(x), raw)  # the scaling is exactly invertible
    np.testing.assert_array_equal(scale_images(raw), x)


def test_shuffled_repeated_and_sharded(tmp_path):
    images = [{"image": np.full((2, 2, 1), i, np.uint8)} for i in range(10)]
    ids = lambda b: np.round((b[:, 0, 0, 0] + 1) * 127.5).astype(int).tolist()
    it = iter(image_dataset(images, 5, seed=1).to_iter_dataset())
    epochs = [ids(next(it)) + ids(next(it)) for _ in range(2)]
    assert sorted(epochs[0]) == sorted(epochs[1]) == list(range(10))
    assert epochs[0] != epochs[1] and epochs[0] != list(range(10))  # reshuffled every epoch
    # Two processes read the two halves of every global batch.
    halves = [
        list(image_dataset(images, 2, seed=1, repeat=False, shard_index=p, shard_count=2))
        for p in (0, 1)
    ]
    one = list(image_dataset(images, 4, seed=1, repeat=False))
    assert len(one) == len(halves[0]) == 2
    for k in range(2):
        np.testing.assert_array_equal(np.concatenate([halves[0][k], halves[1][k]]), one[k])


def test_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown TFDS dataset 'mnistt'.*mnist, fashion_mnist"):
        image_source("mnistt", split="train", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="data_dir is empty"):
        image_source("mnist", split="train", data_dir="")
    with pytest.raises(ValueError, match="is not a directory"):
        image_source("mnist", split="train", data_dir=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="tfds build mnist"):
        image_source("mnist", split="train", data_dir=str(tmp_path))  # exists, nothing prepared


def test_lm1b_text_through_mock_data(tmp_path):
    from diffax.data import ByteTokenizer, encode_fixed_length, text_dataset, text_source

    with tfds.testing.mock_data(**MOCK):
        source = text_source("lm1b", split="train", data_dir=str(tmp_path))
        batches = list(
            text_dataset(source, ByteTokenizer(), 16, 4, seed=0, pad_id=32, repeat=False)
        )
        first = source[0]["text"]
    assert len(batches) == 3 and batches[0].shape == (4, 16) and batches[0].dtype == np.int32
    expected = encode_fixed_length(first, ByteTokenizer(), 16, 32)
    assert any(np.array_equal(row, expected) for b in batches for row in b)
    with pytest.raises(ValueError, match="has no feature 'sentence'"):
        with tfds.testing.mock_data(**MOCK):
            text_source("lm1b", split="train", data_dir=str(tmp_path), text_key="sentence")


def test_encode_fixed_length_pads_and_truncates():
    from diffax.data import ByteTokenizer, encode_fixed_length

    np.testing.assert_array_equal(
        encode_fixed_length(b"hi", ByteTokenizer(), 4, 0), [ord("h"), ord("i"), 0, 0]
    )
    np.testing.assert_array_equal(
        encode_fixed_length("hello", ByteTokenizer(), 3, 0), [104, 101, 108]
    )
