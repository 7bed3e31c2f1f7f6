"""Prepared token shards: the prepare_text writer, the "shards" source, processes, resume."""

import hashlib
import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest

from diffax.data import (
    ByteTokenizer,
    build_source,
    builtin_documents,
    load_tokenizer,
    read_documents,
    read_metadata,
    write_token_shards,
)
from diffax.data.sources import ShardsSource

L = 16


def _documents():
    """~200 single-line documents of varied length from the built-in corpus."""
    lines = [line.strip() for doc in builtin_documents()[:12] for line in doc.splitlines()]
    return [line for line in lines if line][:200]


def _expected(tok, docs, heldout_every=10):
    """The exact train / held-out streams: document i is held out when i % 10 == 9."""
    encoded = [np.append(tok.encode(d), tok.eos_id) for d in docs]
    train = [e for i, e in enumerate(encoded) if i % heldout_every != heldout_every - 1]
    held = [e for i, e in enumerate(encoded) if i % heldout_every == heldout_every - 1]
    return np.concatenate(train), np.concatenate(held)


@pytest.fixture(scope="module")
def prepared(bpe_path, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("shards") / "d")
    tok = load_tokenizer(bpe_path)
    meta = write_token_shards(_documents(), tok, bpe_path, out, num_shards=4, heldout_fraction=0.1)
    return out, meta, tok


def _shard(out, split, s, n):
    return np.load(os.path.join(out, f"{split}-{s:05d}-of-{n:05d}.npy"))


def test_every_document_in_order_followed_by_eos(prepared, bpe_path):
    out, meta, tok = prepared
    train, held = _expected(tok, _documents())
    shards = [_shard(out, "train", s, 4) for s in range(4)]
    np.testing.assert_array_equal(np.concatenate(shards), train)
    np.testing.assert_array_equal(_shard(out, "heldout", 0, 1), held)
    assert all(s[-1] == tok.eos_id and s.dtype == np.uint16 for s in shards)  # whole documents
    assert [s["tokens"] for s in meta["splits"]["train"]] == [len(s) for s in shards]
    assert sum(s["documents"] for s in meta["splits"]["train"]) == 180
    assert max(map(len, shards)) < 1.5 * min(map(len, shards))  # balanced token counts
    on_disk = json.load(open(os.path.join(out, "metadata.json")))
    assert on_disk == meta and read_metadata(out) == meta
    assert (meta["vocab_size"], meta["eos_id"], meta["dtype"]) == (300, 0, "uint16")
    assert meta["tokenizer_file"] == "bpe300.json" and meta["num_documents"] == 200
    digest = hashlib.sha256(open(bpe_path, "rb").read()).hexdigest()
    assert meta["tokenizer_sha256"] == digest
    assert open(os.path.join(out, "bpe300.json"), "rb").read() == open(bpe_path, "rb").read()


def test_two_processes_read_disjoint_shards_in_order(prepared):
    out, _, _ = prepared
    source = ShardsSource(out, L)
    assert source.eos_id == 0 and source.tokenizer.vocab_size == 300
    streams = []
    for p in (0, 1):
        mine = np.concatenate([_shard(out, "train", s, 4) for s in (p, p + 2)])
        it = iter(source.train_dataset(2, p, 2))
        n = len(mine) // (2 * L) + 2  # past the end: the stream starts again
        got = np.concatenate([next(it).ravel() for _ in range(n)])
        np.testing.assert_array_equal(got, np.resize(mine, n * 2 * L))
        streams.append(mine)
    train = np.concatenate([_shard(out, "train", s, 4) for s in range(4)])
    assert len(streams[0]) + len(streams[1]) == len(train)
    with pytest.raises(ValueError, match="4 training shards, fewer than the 5 processes"):
        source.train_dataset(2, 0, 5)


def test_resume_continues_at_the_exact_next_token(prepared):
    out, _, _ = prepared
    source = ShardsSource(out, L)
    it = iter(source.train_dataset(3, 0, 1))
    for _ in range(4):
        next(it)
    state = it.get_state()
    expected = next(it)
    fresh = iter(ShardsSource(out, L).train_dataset(3, 0, 1))
    fresh.set_state(state)
    got = next(fresh)
    np.testing.assert_array_equal(got, expected)
    train = np.concatenate([_shard(out, "train", s, 4) for s in range(4)])
    np.testing.assert_array_equal(got.ravel(), train[4 * 3 * L : 5 * 3 * L])
    assert got.dtype == np.int32


def test_eval_batches_and_baseline_read_the_heldout_split(prepared):
    out, _, _ = prepared
    source = ShardsSource(out, L)
    held = _shard(out, "heldout", 0, 1)
    batches = source.eval_batches(2, 0)
    assert len(batches) == len(held) // (2 * L)
    np.testing.assert_array_equal(np.concatenate(batches).ravel(), held[: len(batches) * 2 * L])
    assert len(source.eval_batches(2, 1)) == 1
    p = np.bincount(held, minlength=300) / len(held)
    p = p[p > 0]
    assert source.baselines()["unigram_entropy"] == pytest.approx(-(p * np.log2(p)).sum())
    with pytest.raises(ValueError, match="fewer than one batch"):
        source.eval_batches(1000, 0)


def test_shards_source_from_config_checks_the_tokenizer(prepared, tmp_path, bpe_path):
    out, _, _ = prepared
    data = types.SimpleNamespace(
        source="shards", path=out, seq_len=L, tokenizer_path=bpe_path, num_workers=0
    )
    source = build_source(data, 0, kind="tokens", task="t")
    assert isinstance(source, ShardsSource) and source.eos_id == 0
    other = tmp_path / "other.json"
    other.write_text(json.dumps(json.load(open(bpe_path)), indent=2))  # same tokens, other file
    data.tokenizer_path = str(other)
    with pytest.raises(ValueError, match="data.tokenizer_path=.*is not the tokenizer the shards"):
        build_source(data, 0, kind="tokens", task="t")
    with pytest.raises(FileNotFoundError, match="holds no metadata.json"):
        ShardsSource(str(tmp_path), L)


def test_writer_errors(bpe_path, tmp_path):
    tok = load_tokenizer(bpe_path)
    with pytest.raises(ValueError, match="no end-of-document token"):
        write_token_shards(["a"], ByteTokenizer(), bpe_path, str(tmp_path / "a"))
    with pytest.raises(ValueError, match="num_shards=5: the train split has 3 documents"):
        write_token_shards(["a", "b", "c"], tok, bpe_path, str(tmp_path / "b"), num_shards=5)
    write_token_shards(["a", "b"], tok, bpe_path, str(tmp_path / "c"), heldout_fraction=0.0)
    with pytest.raises(ValueError, match="already holds prepared shards"):
        write_token_shards(["a", "b"], tok, bpe_path, str(tmp_path / "c"))
    with pytest.raises(ValueError, match="dtype='int8' is not allowed"):
        write_token_shards(["a"], tok, bpe_path, str(tmp_path / "d"), dtype="int8")


def test_shuffled_documents_are_a_permutation(bpe_path, tmp_path):
    tok = load_tokenizer(bpe_path)
    docs = [f"document number {i}" for i in range(30)]
    write_token_shards(docs, tok, bpe_path, str(tmp_path), num_shards=2, shuffle_seed=1)
    stream = np.concatenate([_shard(str(tmp_path), "train", s, 2) for s in range(2)])
    pieces = np.split(stream, np.flatnonzero(stream == 0)[:-1] + 1)
    decoded = [tok.decode(p[:-1]) for p in pieces]
    kept = [d for i, d in enumerate(docs) if i % 100 != 99]  # f = 0.01 holds out none of 30
    assert sorted(decoded) == sorted(kept) and decoded != kept


def test_read_documents_formats(tmp_path):
    path = tmp_path / "docs.txt"
    path.write_text("one\ntwo a\n\n\nthree\n  \nfour\n")
    assert list(read_documents(str(path), "lines")) == ["one", "two a", "three", "four"]
    assert list(read_documents(str(path), "blank_lines")) == ["one\ntwo a", "three", "four"]
    path.write_text('{"text": "a b"}\n\n{"text": "c", "id": 2}\n')
    assert list(read_documents(str(path), "jsonl")) == ["a b", "c"]
    with pytest.raises(ValueError, match="docs.txt:1: not a JSON object with a 'body' field"):
        list(read_documents(str(path), "jsonl", text_key="body"))
    with pytest.raises(ValueError, match="allowed values: lines, blank_lines, jsonl"):
        list(read_documents(str(path), "csv"))


def test_prepare_text_command_line(prepared, bpe_path, tmp_path):
    out, meta, _ = prepared
    path = tmp_path / "docs.txt"
    path.write_text("\n".join(_documents()) + "\n")
    out2 = str(tmp_path / "cli")
    cmd = [
        sys.executable,
        "-m",
        "experiments.prepare_text",
        f"--input={path}",
        "--document_format=lines",
        f"--tokenizer_path={bpe_path}",
        f"--output_dir={out2}",
        "--num_shards=4",
        "--heldout_fraction=0.1",
    ]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    result = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["train"] == {
        "shards": 4,
        "documents": 180,
        "tokens": sum(s["tokens"] for s in meta["splits"]["train"]),
    }
    assert read_metadata(out2) == meta
    for s in range(4):
        np.testing.assert_array_equal(_shard(out2, "train", s, 4), _shard(out, "train", s, 4))
