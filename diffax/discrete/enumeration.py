"""Exact answers for tiny sequence spaces by enumeration (test oracle and benchmark target).

A distribution over all V^L sequences is held as a table; from it, for any process, the exact
denoiser p(x_0^l | x_t), the exact concrete score p_t(x_t^l <- y) / p_t(x_t), the exact marginal
log p_t(x_t) and the exact NLL follow by summing over the table. Everything is float32 JAX so the
exact models can drive the samplers under `jit`; sizes are N = V^L sequences (keep N <= ~10^4).
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np

from diffax.discrete.processes import Process
from diffax.discrete.processes.base import HIGHEST, gather_column

# Finite stand-in for log(0) so that 0 * log(0) terms of one-hot products vanish instead of NaN.
_LOG_ZERO = -1e30


class EnumeratedTarget:
    """A distribution over {0..V-1}^L given by a table of N = V^L probabilities.

    Args:
      probs: `[V] * L` or `[V^L]` probabilities (lexicographic order, last position fastest).
      vocab_size: V. length: L.
    """

    def __init__(self, probs: np.ndarray, vocab_size: int, length: int):
        probs = np.asarray(probs, np.float64).reshape(-1)
        if probs.size != vocab_size**length:
            raise ValueError(f"probs must hold V^L = {vocab_size**length} values, got {probs.size}")
        if probs.min() < 0 or not np.isclose(probs.sum(), 1.0):
            raise ValueError("probs must be non-negative and sum to 1")
        self.vocab_size, self.length = vocab_size, length
        self.probs = probs
        self.sequences = np.array(list(itertools.product(range(vocab_size), repeat=length)))
        self._log_probs = jnp.asarray(np.log(np.maximum(probs, 1e-300)), jnp.float32)
        self._one_hot = jnp.asarray(np.eye(vocab_size)[self.sequences], jnp.float32)  # [N, L, V]

    @classmethod
    def markov_chain(
        cls, seed: int, vocab_size: int, length: int, concentration: float = 0.5
    ) -> EnumeratedTarget:
        """A random first-order Markov chain: initial law and transition rows ~ Dirichlet.

        Small `concentration` gives strongly correlated sequences, which parallel (few-step)
        samplers cannot reproduce, so their error is visible.
        """
        rng = np.random.default_rng(seed)
        init = rng.dirichlet(np.full(vocab_size, concentration))
        trans = rng.dirichlet(np.full(vocab_size, concentration), size=vocab_size)
        seqs = np.array(list(itertools.product(range(vocab_size), repeat=length)))
        p = init[seqs[:, 0]]
        for k in range(1, length):
            p = p * trans[seqs[:, k - 1], seqs[:, k]]
        return cls(p, vocab_size, length)

    @property
    def num_sequences(self) -> int:
        """N = V^L."""
        return self.probs.size

    def entropy(self) -> float:
        """Shannon entropy in nats."""
        p = self.probs[self.probs > 0]
        return float(-(p * np.log(p)).sum())

    def index(self, x: np.ndarray) -> np.ndarray:
        """Position of each `[B, L]` clean sequence in the table (base-V number). Returns `[B]`."""
        x = np.asarray(x)
        return (x * self.vocab_size ** np.arange(self.length - 1, -1, -1)).sum(axis=-1)

    def nll(self, x0: np.ndarray) -> np.ndarray:
        """Exact -log p(x_0) in nats for `[B, L]` clean sequences. Returns `[B]` float64."""
        return -np.log(self.probs[self.index(x0)])

    def sample(self, key: jax.Array, num: int) -> jax.Array:
        """Exact samples, `[num, L]` int32."""
        idx = jax.random.categorical(key, self._log_probs, shape=(num,))
        return jnp.asarray(self.sequences, jnp.int32)[idx]

    def _log_likelihood(self, process: Process, x_t: jax.Array, t: jax.Array) -> jax.Array:
        """log q(x_t | x_0) for every table sequence x_0: `[B, N]`."""
        p_0t = process.marginal_matrix(t)  # [B, S, S]
        col = gather_column(p_0t, x_t)[..., : self.vocab_size]  # [B, L, V]: P[x0, x_t^l]
        log_col = jnp.maximum(jnp.log(col), _LOG_ZERO)
        return jnp.einsum("blv,nlv->bn", log_col, self._one_hot, precision=HIGHEST)

    def posterior(self, process: Process, x_t: jax.Array, t: jax.Array) -> jax.Array:
        """p(x_0 | x_t) over the table: `[B, N]` float32."""
        return jax.nn.softmax(self._log_probs + self._log_likelihood(process, x_t, t), axis=-1)

    def log_marginal(self, process: Process, x_t: jax.Array, t: jax.Array) -> jax.Array:
        """log p_t(x_t) for `[B, L]` noisy sequences and `[B]` times. Returns `[B]`."""
        return jax.nn.logsumexp(self._log_probs + self._log_likelihood(process, x_t, t), axis=-1)

    def denoiser_probs(self, process: Process, x_t: jax.Array, t: jax.Array) -> jax.Array:
        """Exact p(x_0^l = v | x_t): `[B, L, V]` float32.

        For an absorbing process (`mask_id` not None) the result does not depend on t (it is
        evaluated at t = 1/2): the posterior only asks which x_0 agree with the unmasked tokens,
        which keeps it defined for states that are impossible at the given t (clean tokens at
        t = 1, as in infilling).
        """
        if process.mask_id is not None:
            t = jnp.full_like(t, 0.5)
        post = self.posterior(process, x_t, t)
        return jnp.einsum("bn,nlv->blv", post, self._one_hot, precision=HIGHEST)

    def denoiser(self, process: Process):
        """The exact denoiser as a `model_fn(x_t [B, L], t [B]) -> logits [B, L, V]`."""

        def model_fn(x_t: jax.Array, t: jax.Array) -> jax.Array:
            t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), x_t.shape[:1])
            return jnp.log(self.denoiser_probs(process, x_t, t))

        return model_fn

    def concrete_score(self, process: Process):
        """The exact concrete score as a `model_fn(x_t, t) -> log ratios [B, L, V]`.

        r_y = sum_v p(x_0^l = v | x_t) q_t(y | v) / q_t(x_t^l | v), evaluated from the
        enumerated posterior and the process's marginal matrix (not its conversion routines).
        """
        v = self.vocab_size

        def model_fn(x_t: jax.Array, t: jax.Array) -> jax.Array:
            t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), x_t.shape[:1])
            marg = self.denoiser_probs(process, x_t, t)
            p_0t = process.marginal_matrix(t)[:, :v, :]  # [B, V, S]
            col = gather_column(p_0t, x_t)  # [B, L, V]
            w = jnp.where(col > 0, marg / jnp.where(col > 0, col, 1.0), 0.0)
            r = jnp.einsum("blk,bky->bly", w, p_0t[:, :, :v], precision=HIGHEST)
            return jnp.log(r)

        return model_fn

    def empirical(self, samples: np.ndarray) -> tuple[np.ndarray, float]:
        """Histogram of `[n, L]` samples over the table and the fraction of invalid samples
        (ids outside [0, V), e.g. leftover masks)."""
        samples = np.asarray(samples)
        valid = np.all((samples >= 0) & (samples < self.vocab_size), axis=-1)
        counts = np.bincount(self.index(samples[valid]), minlength=self.num_sequences)
        return counts / len(samples), float(1.0 - valid.mean())

    def total_variation(self, samples: np.ndarray) -> float:
        """TV(empirical, target) = (sum |p_hat - p| + invalid mass) / 2."""
        p_hat, invalid = self.empirical(samples)
        return float(0.5 * (np.abs(p_hat - self.probs).sum() + invalid))

    def kl_divergence(self, samples: np.ndarray) -> float:
        """KL(empirical || target) in nats (plug-in; inf if any sample is invalid)."""
        p_hat, invalid = self.empirical(samples)
        if invalid > 0:
            return math.inf
        nz = p_hat > 0
        return float((p_hat[nz] * np.log(p_hat[nz] / self.probs[nz])).sum())

    def sampling_noise(self, num_samples: int, repeats: int = 20, seed: int = 0):
        """TV and KL of `num_samples` exact draws against the target (mean, std over repeats).

        The floor that Monte-Carlo error alone puts on `total_variation` / `kl_divergence`.
        Returns `{"tv": (mean, std), "kl": (mean, std)}`.
        """
        rng = np.random.default_rng(seed)
        tvs, kls = [], []
        for _ in range(repeats):
            p_hat = rng.multinomial(num_samples, self.probs) / num_samples
            tvs.append(0.5 * np.abs(p_hat - self.probs).sum())
            nz = p_hat > 0
            kls.append((p_hat[nz] * np.log(p_hat[nz] / self.probs[nz])).sum())
        return {
            "tv": (float(np.mean(tvs)), float(np.std(tvs))),
            "kl": (float(np.mean(kls)), float(np.std(kls))),
        }
