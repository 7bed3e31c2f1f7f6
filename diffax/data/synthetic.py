"""Synthetic discrete data with a known entropy: sequences from a random Markov chain.

Training on it shows how close a model's ELBO gets to the true negative log-likelihood (the exact
entropy), which a natural corpus cannot tell.
"""

from __future__ import annotations

import numpy as np


def entropy_bits(p: np.ndarray) -> np.ndarray:
    """Shannon entropy in bits of probability vectors along the last axis."""
    p = np.asarray(p, np.float64)
    logs = np.log2(p, where=p > 0, out=np.zeros_like(p))
    return -(p * logs).sum(axis=-1)


class MarkovChainSource:
    """A stationary first-order Markov chain over `vocab_size` symbols.

    Rows of the transition matrix are drawn from a symmetric Dirichlet(`concentration`) with
    `seed`; the first symbol is drawn from the stationary distribution, so every position has
    the same marginal.

    Args:
      vocab_size: number of symbols V (ids 0..V-1).
      seq_len: sequence length L.
      seed: seed of the chain (and of the example stream).
      concentration: Dirichlet concentration; small values give peaked, low-entropy rows.
    """

    def __init__(self, vocab_size: int, seq_len: int, seed: int, concentration: float = 0.5):
        if vocab_size < 2 or seq_len < 1 or concentration <= 0:
            raise ValueError(
                f"need vocab_size >= 2, seq_len >= 1, concentration > 0; got {vocab_size}, "
                f"{seq_len}, {concentration}"
            )
        rng = np.random.default_rng((seed, 1))
        self.transition = rng.dirichlet(np.full(vocab_size, concentration), size=vocab_size)
        w, v = np.linalg.eig(self.transition.T)
        pi = np.abs(np.real(v[:, np.argmin(np.abs(w - 1.0))]))
        self.stationary = pi / pi.sum()
        self.vocab_size, self.seq_len, self.seed = vocab_size, seq_len, seed
        self._cdf = np.cumsum(self.transition, axis=1)
        self._cdf0 = np.cumsum(self.stationary)

    def __call__(self, index: int) -> np.ndarray:
        """The sequence with global `index`: `[seq_len]` int32, a pure function of the index."""
        u = np.random.default_rng((self.seed, 2, int(index))).random(self.seq_len)
        out = np.empty(self.seq_len, np.int32)
        out[0] = min(np.searchsorted(self._cdf0, u[0], side="right"), self.vocab_size - 1)
        for i in range(1, self.seq_len):
            row = self._cdf[out[i - 1]]
            out[i] = min(np.searchsorted(row, u[i], side="right"), self.vocab_size - 1)
        return out

    def log_prob(self, x: np.ndarray) -> np.ndarray:
        """Exact log-probability (nats) of sequences `x: [..., L]`."""
        x = np.asarray(x)
        lp = np.log(self.stationary[x[..., 0]])
        return lp + np.log(self.transition[x[..., :-1], x[..., 1:]]).sum(axis=-1)

    def entropy_bits_per_token(self) -> float:
        """Exact entropy of a length-L sequence divided by L, in bits:
        (H(pi) + (L - 1) sum_i pi_i H(P_i)) / L."""
        rate = float(self.stationary @ entropy_bits(self.transition))
        return (float(entropy_bits(self.stationary)) + (self.seq_len - 1) * rate) / self.seq_len
