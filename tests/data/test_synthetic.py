"""The synthetic Markov-chain source: exact entropy and sampling law, checked by enumeration."""

import itertools

import numpy as np
import pytest

from diffax.data.synthetic import MarkovChainSource


def test_entropy_matches_enumeration():
    chain = MarkovChainSource(3, 4, seed=0)
    seqs = np.array(list(itertools.product(range(3), repeat=4)))
    logp = chain.log_prob(seqs)
    p = np.exp(logp)
    assert p.sum() == pytest.approx(1.0, abs=1e-12)
    exact = -(p * logp).sum() / np.log(2) / 4
    assert chain.entropy_bits_per_token() == pytest.approx(exact, rel=1e-10)


def test_samples_follow_the_chain():
    chain = MarkovChainSource(3, 3, seed=1)
    samples = np.stack([chain(i) for i in range(20_000)])
    np.testing.assert_array_equal(chain(7), samples[7])  # deterministic per index
    seqs = np.array(list(itertools.product(range(3), repeat=3)))
    p = np.exp(chain.log_prob(seqs))
    codes = samples @ np.array([9, 3, 1])
    freq = np.bincount(codes, minlength=27) / len(samples)
    # Total variation against the exact law, within a few Monte-Carlo standard deviations.
    assert 0.5 * np.abs(freq - p).sum() < 0.02


def test_bad_arguments():
    with pytest.raises(ValueError, match="vocab_size >= 2"):
        MarkovChainSource(1, 4, seed=0)
