"""Data sources behind one interface: registry, kinds, shapes, held-out batches, baselines."""

import types

import numpy as np
import pytest
import tensorflow_datasets as tfds

from diffax.data import SOURCES, Source, TokenSource, VectorSource, build_source
from diffax.data.sources import MarkovSource, ToySource
from diffax.data.synthetic import MarkovChainSource


def _data(**overrides):
    """A stand-in for the `data` config section (sources read it by attribute)."""
    values = dict(
        source="builtin",
        path="",
        tokenizer="text8",
        tokenizer_path="",
        seq_len=16,
        heldout_fraction=0.1,
        num_workers=0,
        text_key="text",
        markov_vocab_size=4,
        markov_concentration=0.5,
        dataset="gaussian_ring",
        data_dir="",
        train_split="train",
        eval_split="test",
        num_heldout=40,
    )
    values.update(overrides)
    return types.SimpleNamespace(**values)


def test_registry_names_every_source():
    assert SOURCES.names() == [
        "builtin",
        "markov",
        "shards",
        "text_file",
        "tfds",
        "tfds_images",
        "toy",
    ]
    with pytest.raises(ValueError, match="data.source.*allowed values: builtin, markov"):
        build_source(_data(source="nope"), 0, kind="tokens", task="text_diffusion")


def test_source_of_the_wrong_kind_lists_the_fitting_ones():
    with pytest.raises(ValueError, match="allowed values: tfds_images, toy"):
        build_source(_data(source="builtin"), 0, kind="vectors", task="continuous_diffusion")
    with pytest.raises(
        ValueError, match="allowed values: builtin, markov, shards, text_file, tfds$"
    ):
        build_source(_data(source="toy"), 0, kind="tokens", task="text_diffusion")


def test_builtin_text_source(tmp_path):
    source = build_source(_data(), 0, kind="tokens", task="t")
    assert isinstance(source, TokenSource) and source.example_shape == (16,)
    batch = next(iter(source.train_dataset(4, 0, 1)))
    assert batch.shape == (4, 16) and batch.dtype == np.int32
    assert len(source.eval_batches(8, 3)) == 3
    assert len(source.eval_batches(8, 0)) > 3
    assert 3.5 < source.baselines()["unigram_entropy"] < np.log2(27)
    path, lines = source.write_samples(batch, str(tmp_path), 7)
    assert path.endswith("samples_00000007.txt") and len(lines) == 4
    assert open(path).read().splitlines() == lines


def test_markov_source_reports_the_chain_entropy():
    source = build_source(_data(source="markov"), 0, kind="tokens", task="t")
    assert isinstance(source, MarkovSource) and source.tokenizer.vocab_size == 4
    chain = MarkovChainSource(4, 16, 0, 0.5)
    assert source.baselines()["true_entropy"] == pytest.approx(chain.entropy_bits_per_token())
    batches = source.eval_batches(5, 0)  # 0: the default 16 batches
    assert len(batches) == 16 and batches[0].shape == (5, 16)
    np.testing.assert_array_equal(batches[0][0], chain(2**41))
    with pytest.raises(ValueError, match="data.markov_vocab_size=40"):
        MarkovSource(40, 8, 0)


def test_toy_source(tmp_path):
    source = build_source(_data(source="toy"), 0, kind="vectors", task="c")
    assert isinstance(source, (ToySource, VectorSource)) and source.pixel_bits is None
    assert [b.shape for b in source.eval_batches(16, 0)] == [(16, 2), (16, 2)]
    assert len(source.eval_batches(16, 1)) == 1
    with pytest.raises(ValueError, match="data.num_heldout=40 is fewer than one batch"):
        source.eval_batches(64, 0)
    assert "data_entropy_bits_per_dim" in source.baselines()
    with pytest.raises(ValueError, match="allowed values: a toy distribution .checkerboard"):
        build_source(_data(source="toy", dataset="spiral"), 0, kind="vectors", task="c")


def test_tfds_sources_with_mock_data(tmp_path):
    with tfds.testing.mock_data(num_examples=16, policy=tfds.testing.MockPolicy.USE_CODE):
        images = build_source(
            _data(source="tfds_images", dataset="mnist", data_dir=str(tmp_path)),
            0,
            kind="vectors",
            task="c",
        )
        assert images.example_shape == (28, 28, 1) and images.pixel_bits == 8
        assert len(images.eval_batches(4, 2)) == 2
        text = build_source(
            _data(source="tfds", dataset="lm1b", data_dir=str(tmp_path), tokenizer="byte"),
            0,
            kind="tokens",
            task="t",
        )
        batch = next(iter(text.train_dataset(4, 0, 1)))
        assert batch.shape == (4, 16) and text.baselines()["unigram_entropy"] > 0


@pytest.mark.parametrize("name", ["builtin", "markov", "toy"])
def test_sources_satisfy_the_protocol(name):
    kind = SOURCES.get(name).kind
    assert isinstance(build_source(_data(source=name), 0, kind=kind, task="t"), Source)


def test_text_sources_with_a_tokenizer_file(tmp_path, bpe_path):
    from diffax.data import load_tokenizer

    path = tmp_path / "t.txt"
    text = "First Citizen:\nBefore we proceed any further, hear me speak.\n" * 20
    path.write_text(text)
    data = _data(source="text_file", path=str(path), tokenizer_path=bpe_path, heldout_fraction=0.5)
    source = build_source(data, 0, kind="tokens", task="t")
    assert source.eos_id == 0 and source.tokenizer.vocab_size == 300
    assert "corpus" not in vars(source)  # nothing tokenised until data is asked for
    expected = np.append(load_tokenizer(bpe_path).encode(text), 0)  # one document, then EOS
    corpus = source.corpus
    np.testing.assert_array_equal(np.concatenate([corpus.train, corpus.heldout]), expected)
    builtin = build_source(_data(tokenizer_path=bpe_path), 0, kind="tokens", task="t")
    assert builtin.eos_id == 0 and build_source(_data(), 0, kind="tokens", task="t").eos_id is None
