"""Text sources, tokenizers and the grain pipeline."""

import numpy as np
import pytest

from diffax.data import (
    ByteTokenizer,
    CharTokenizer,
    Text8Tokenizer,
    heldout_batches,
    load_corpus,
    train_dataset,
    unigram_entropy_bits,
)


def test_text8_tokenizer_round_trip():
    tok = Text8Tokenizer()
    ids = tok.encode("Hello, World!  42 times")
    assert tok.decode(ids) == "hello world times"
    assert ids.dtype == np.int32 and ids.max() < 27 and tok.vocab_size == 27


def test_char_and_byte_tokenizers():
    tok = CharTokenizer.fit("To be, or not")
    assert tok.decode(tok.encode("not be")) == "not be"
    with pytest.raises(ValueError, match="not in the tokenizer's alphabet"):
        tok.encode("xyz")
    b = ByteTokenizer()
    assert b.decode(b.encode("héllo")) == "héllo"


def test_builtin_corpus_split_is_deterministic():
    a, b = load_corpus("builtin"), load_corpus("builtin")
    np.testing.assert_array_equal(a.train, b.train)
    np.testing.assert_array_equal(a.heldout, b.heldout)
    n = len(a.train) + len(a.heldout)
    assert n > 300_000 and abs(len(a.heldout) / n - 0.1) < 1e-4
    assert set(np.unique(a.train)) == set(range(27))


def test_text_file_source(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("First Citizen:\nBefore we proceed any further, hear me speak.\n" * 20)
    corpus = load_corpus("text_file", path=str(path), tokenizer="char")
    assert corpus.tokenizer.decode(corpus.train[:14]) == "First Citizen:"


@pytest.mark.parametrize(
    "kwargs,err,match",
    [
        ({"source": "text_file", "path": "/no/such/file.txt"}, FileNotFoundError, "no such file"),
        ({"source": "text_file", "path": ""}, ValueError, "data.path is empty"),
        ({"source": "wiki"}, ValueError, "allowed values: 'builtin', 'text_file'"),
        ({"source": "builtin", "tokenizer": "bpe"}, ValueError, "unknown tokenizer 'bpe'"),
    ],
)
def test_bad_sources(kwargs, err, match):
    with pytest.raises(err, match=match):
        load_corpus(**kwargs)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("  \n")
    with pytest.raises(ValueError, match="is empty"):
        load_corpus("text_file", path=str(path))


def test_unigram_entropy_exact():
    assert unigram_entropy_bits(np.array([0, 1, 2, 3]), 4) == pytest.approx(2.0)
    assert unigram_entropy_bits(np.array([0, 0, 0, 1]), 2) == pytest.approx(
        -(0.75 * np.log2(0.75) + 0.25 * np.log2(0.25))
    )


def test_pipeline_resumes_and_shards():
    ids = np.arange(1000, dtype=np.int32)
    ds = train_dataset(ids, 8, 4, seed=3)
    it = iter(ds)
    first = [next(it) for _ in range(3)]
    state = it.get_state()
    following = next(it)
    it2 = iter(train_dataset(ids, 8, 4, seed=3))
    it2.set_state(state)
    np.testing.assert_array_equal(next(it2), following)
    # Windows are contiguous slices of the stream.
    assert all(np.all(np.diff(row) == 1) for row in first[0])
    # Two processes' blocks, concatenated, are exactly the single-process global batches.
    full = iter(train_dataset(ids, 8, 4, seed=3))
    s0 = iter(train_dataset(ids, 8, 2, seed=3, shard_index=0, shard_count=2))
    s1 = iter(train_dataset(ids, 8, 2, seed=3, shard_index=1, shard_count=2))
    for _ in range(3):
        np.testing.assert_array_equal(next(full), np.concatenate([next(s0), next(s1)]))


def test_heldout_batches():
    batches = heldout_batches(np.arange(100, dtype=np.int32), 10, 4)
    assert len(batches) == 2 and batches[0].shape == (4, 10)
    np.testing.assert_array_equal(batches[1][0], np.arange(40, 50))
    with pytest.raises(ValueError, match="fewer than one batch"):
        heldout_batches(np.arange(20, dtype=np.int32), 10, 4)


@pytest.mark.slow
def test_worker_processes_give_the_same_batches_and_resume():
    ids = np.arange(500, dtype=np.int32)
    plain = iter(train_dataset(ids, 8, 4, seed=1))
    workers = iter(train_dataset(ids, 8, 4, seed=1, num_workers=2))
    for _ in range(3):
        np.testing.assert_array_equal(next(plain), next(workers))
    state = workers.get_state()
    expected = next(workers)
    again = iter(train_dataset(ids, 8, 4, seed=1, num_workers=2))
    again.set_state(state)
    np.testing.assert_array_equal(next(again), expected)
