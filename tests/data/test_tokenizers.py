"""Tokenizers read from files (`data.tokenizer_path`): Hugging Face JSON and sentencepiece."""

import numpy as np
import pytest

from diffax.data import (
    ByteTokenizer,
    CharTokenizer,
    HuggingFaceTokenizer,
    SentencePieceTokenizer,
    Text8Tokenizer,
    Tokenizer,
    builtin_documents,
    load_corpus,
    load_tokenizer,
)


def test_bpe_file_round_trip_and_eos(bpe_path):
    tok = load_tokenizer(bpe_path)
    assert isinstance(tok, HuggingFaceTokenizer) and isinstance(tok, Tokenizer)
    assert tok.vocab_size == 300 and tok.eos_id == 0
    text = "def f(x):\n    return x ** 2  # é, ü, 中\n"
    ids = tok.encode(text)
    assert ids.dtype == np.int32 and 0 < ids.min() and ids.max() < 300
    assert len(ids) < len(text.encode("utf-8"))  # merges were learnt
    assert tok.decode(ids) == text  # byte-level BPE is exactly invertible
    assert [list(x) for x in tok.encode_batch(["a b", text])] == [
        list(tok.encode("a b")),
        list(ids),
    ]
    assert tok.decode([0]) == "<|endoftext|>"


def test_sentencepiece_model(tmp_path):
    sentencepiece = pytest.importorskip("sentencepiece")

    lines = [line for doc in builtin_documents()[:60] for line in doc.splitlines() if line]
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_prefix=str(tmp_path / "sp"),
        vocab_size=200,
        model_type="bpe",
        character_coverage=1.0,
        minloglevel=2,
    )
    tok = load_tokenizer(str(tmp_path / "sp.model"))
    assert isinstance(tok, SentencePieceTokenizer)
    assert tok.vocab_size == 200 and tok.eos_id == 2  # sentencepiece's default </s>
    text = "the value of the expression is returned"
    assert tok.decode(tok.encode(text)) == text
    assert [list(x) for x in tok.encode_batch([text])] == [list(tok.encode(text))]


def test_builtin_tokenizers_have_no_eos():
    for tok in (Text8Tokenizer(), CharTokenizer("ab"), ByteTokenizer()):
        assert tok.eos_id is None and isinstance(tok, Tokenizer)


def test_tokenizer_file_errors(tmp_path, bpe_path):
    with pytest.raises(FileNotFoundError, match="data.tokenizer_path='/no/tok.json': no such"):
        load_tokenizer("/no/tok.json")
    with pytest.raises(ValueError, match="data.tokenizer_path=.*unknown extension '.txt'"):
        load_tokenizer(str(tmp_path / "vocab.txt"))
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="could not be read as a .json tokenizer"):
        load_tokenizer(str(tmp_path / "bad.json"))
    with pytest.raises(ValueError, match="--tokenizer_path is empty"):
        load_tokenizer("", name="--tokenizer_path")


def test_builtin_corpus_with_a_tokenizer_file_separates_topics_by_eos(bpe_path):
    corpus = load_corpus("builtin", tokenizer="char", tokenizer_path=bpe_path)
    tok = load_tokenizer(bpe_path)
    assert corpus.eos_id == 0 and corpus.tokenizer.vocab_size == 300
    docs = builtin_documents()
    expected = np.concatenate([np.append(tok.encode(d), 0) for d in docs])
    np.testing.assert_array_equal(np.concatenate([corpus.train, corpus.heldout]), expected)
    assert (expected == 0).sum() == len(docs)


def test_tokenizers_pickle_as_their_path(bpe_path):
    import pickle

    tok = pickle.loads(pickle.dumps(load_tokenizer(bpe_path)))
    assert tok.path == bpe_path and tok.eos_id == 0 and tok.vocab_size == 300
