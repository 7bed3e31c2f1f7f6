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


def _lm1b(tmp_path):
    from diffax.data import text_source

    source = text_source("lm1b", split="train", data_dir=str(tmp_path))
    texts = [source[i]["text"] for i in range(len(source))]
    return source, [t.decode("utf-8") if isinstance(t, bytes) else t for t in texts]


def test_lm1b_documents_are_packed_without_padding(tmp_path):
    from diffax.data import ByteTokenizer, text_dataset

    tok = ByteTokenizer()
    with tfds.testing.mock_data(**MOCK):
        source, docs = _lm1b(tmp_path)
        batches = list(text_dataset(source, tok, 16, 2, seed=0, shuffle=False, repeat=False))
    # Without an EOS token the byte tokenizer separates documents by a newline (byte 10).
    stream = np.concatenate([np.append(tok.encode(d), 10) for d in docs])
    n = len(stream) // 32  # full batches of 2 x 16; only the tail short of one is dropped
    assert len(batches) == n and batches[0].shape == (2, 16) and batches[0].dtype == np.int32
    np.testing.assert_array_equal(np.concatenate(batches).ravel(), stream[: n * 32])


def test_lm1b_with_a_tokenizer_file_ends_documents_with_eos(tmp_path, bpe_path):
    from diffax.data import load_tokenizer, text_dataset

    tok = load_tokenizer(bpe_path)
    with tfds.testing.mock_data(**MOCK):
        source, docs = _lm1b(tmp_path)
        halves = [
            list(
                text_dataset(
                    source,
                    tok,
                    8,
                    1,
                    seed=0,
                    shuffle=False,
                    repeat=False,
                    shard_index=p,
                    shard_count=2,
                )
            )
            for p in (0, 1)
        ]
    # Process p packs documents p, p + 2, ..., each followed by EOS (id 0).
    for p, batches in enumerate(halves):
        stream = np.concatenate([np.append(tok.encode(d), 0) for d in docs[p::2]])
        got = np.concatenate(batches).ravel()
        np.testing.assert_array_equal(got, stream[: len(got)])
        assert len(stream) - len(got) < 8


def test_tfds_text_source_resumes_at_the_exact_next_token(tmp_path, bpe_path):
    import types

    from diffax.data import build_source

    data = types.SimpleNamespace(
        source="tfds",
        dataset="lm1b",
        data_dir=str(tmp_path),
        train_split="train",
        eval_split="test",
        tokenizer="byte",
        tokenizer_path=bpe_path,
        seq_len=8,
        seed=0,
        text_key="text",
        num_workers=0,
    )
    with tfds.testing.mock_data(**MOCK):
        source = build_source(data, 0, kind="tokens", task="t")
        _, docs = _lm1b(tmp_path)
        assert source.eos_id == 0 and source.tokenizer.vocab_size == 300
        it = iter(source.train_dataset(3, 0, 1))
        seen = [next(it) for _ in range(5)]
        state = it.get_state()
        expected = [next(it) for _ in range(2)]
        fresh = iter(source.train_dataset(3, 0, 1))
        fresh.set_state(state)
        np.testing.assert_array_equal(np.stack([next(fresh) for _ in range(2)]), expected)
        assert len(source.eval_batches(2, 1)) == 1 and source.baselines()["unigram_entropy"] > 0
    # The stream starts at a document; every EOS-terminated piece is one whole document.
    flat = np.concatenate([b.ravel() for b in seen])
    pieces = np.split(flat, np.flatnonzero(flat == 0) + 1)[:-1]
    assert len(pieces) >= 5
    assert all(p[-1] == 0 and source.tokenizer.decode(p[:-1]) in docs for p in pieces)
    with pytest.raises(ValueError, match="has no feature 'sentence'"):
        with tfds.testing.mock_data(**MOCK):
            from diffax.data import text_source

            text_source("lm1b", split="train", data_dir=str(tmp_path), text_key="sentence")
