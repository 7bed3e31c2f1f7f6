"""Test support for diffax.discrete: small targets, generators, a CTMC simulator, ELBO quadrature.

The exact denoiser, concrete score and NLL come from `diffax.discrete.EnumeratedTarget`; this
module adds what only tests need: random generators with known spectral structure, a Gillespie
simulation of the forward CTMC in numpy, and the expected negative ELBO by quadrature over t
with the expectation over x_t computed by enumeration.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np

import diffax.discrete as dd

V, L = 3, 3  # 27 sequences: tiny enough for enumeration everywhere


def target(seed: int = 0) -> dd.EnumeratedTarget:
    """A strongly correlated Markov chain over {0, 1, 2}^3."""
    return dd.EnumeratedTarget.markov_chain(seed, V, L, concentration=0.5)


def random_generator(size: int, seed: int = 0, kind: str = "random") -> np.ndarray:
    """A valid rate matrix: "random" (dense), "cyclic" (complex eigenvalues), "defective"
    (a pure-birth chain 0 -> 1 -> ... with equal exit rates: a Jordan block)."""
    rng = np.random.default_rng(seed)
    if kind == "random":
        q = rng.exponential(size=(size, size))
    elif kind == "cyclic":
        q = 0.05 * rng.exponential(size=(size, size))
        q[np.arange(size), (np.arange(size) + 1) % size] += 2.0
    elif kind == "defective":
        q = np.zeros((size, size))
        q[np.arange(size - 1), np.arange(1, size)] = 1.0
    else:
        raise ValueError(kind)
    np.fill_diagonal(q, 0.0)
    np.fill_diagonal(q, -q.sum(axis=1))
    return q


def processes() -> dict[str, object]:
    """One process of each kind over V = 3 clean ids."""
    return {
        "masked": dd.Masked(V),
        "uniform": dd.Uniform(V),
        "general": dd.General(random_generator(V, seed=1)),
    }


def simulate_ctmc(q_base: np.ndarray, total_noise: float, x0: np.ndarray, rng) -> np.ndarray:
    """Gillespie simulation of a CTMC with generator beta(t) Q_base up to total noise sigma_bar.

    In the clock sigma_bar(t) the chain is homogeneous with generator Q_base, so exponential
    holding times with rate -Q_base[x, x] and jumps to y with probability Q_base[x, y] / rate.
    `x0`: `[n]` starting states. Returns `[n]` states at sigma_bar.
    """
    x = np.array(x0, copy=True)
    clock = np.zeros(len(x))
    alive = np.ones(len(x), bool)
    exit_rate = -np.diag(q_base)
    jump = np.where(exit_rate[:, None] > 0, q_base / np.maximum(exit_rate, 1e-300)[:, None], 0.0)
    np.fill_diagonal(jump, 0.0)
    cum = np.cumsum(jump, axis=1)
    while alive.any():
        idx = np.nonzero(alive)[0]
        rate = exit_rate[x[idx]]
        hold = np.where(rate > 0, rng.exponential(size=len(idx)) / np.maximum(rate, 1e-300), np.inf)
        clock[idx] += hold
        done = clock[idx] > total_noise
        alive[idx[done]] = False
        move = idx[~done]
        u = rng.uniform(size=len(move)) * cum[x[move], -1]
        x[move] = (u[:, None] > cum[x[move]]).sum(axis=1)
    return x


def all_states(num_states: int, length: int) -> np.ndarray:
    """Every sequence in {0..S-1}^length, `[S^length, length]`."""
    return np.array(list(itertools.product(range(num_states), repeat=length)), np.int32)


def expected_bound(process, model_fn, x0: np.ndarray, prediction: str, num_nodes: int = 40):
    """E_t E_{x_t}[rate-KL integrand] for clean sequences `x0` `[K, L]`, by quadrature.

    t = u^2 with Gauss-Legendre nodes in u concentrates nodes near t = 0, where the integrand of
    non-masked processes changes fastest; x_t runs over all S^L states weighted by q_t(x_t | x0).
    Returns `[K]` expected negative ELBOs in nats (float64), end terms excluded.
    """
    from diffax.discrete.losses import rate_kl_terms

    x0 = np.atleast_2d(x0)
    states = all_states(process.num_states, x0.shape[1])
    nodes, weights = np.polynomial.legendre.leggauss(num_nodes)
    u = 0.5 * (nodes + 1.0)
    w_t = 0.5 * weights * 2.0 * u  # dt = 2u du
    k, n_s = len(x0), len(states)
    # Rows ordered (x0, node, state).
    t_rep = jnp.asarray(np.tile(np.repeat(u**2, n_s), k), jnp.float32)
    xt = jnp.asarray(np.tile(states, (k * num_nodes, 1)))
    x0_rep = jnp.asarray(np.repeat(x0, num_nodes * n_s, axis=0), jnp.int32)

    @jax.jit
    def evaluate(x0_rep, xt, t_rep):
        rows = process.marginal_probs(x0_rep, t_rep)  # [B, L, S]
        terms = rate_kl_terms(process, model_fn(xt, t_rep), x0_rep, xt, t_rep, prediction)
        return rows, terms

    rows, terms = evaluate(x0_rep, xt, t_rep)
    rows = np.asarray(rows, np.float64)
    q = np.prod(np.take_along_axis(rows, np.asarray(xt)[..., None], -1)[..., 0], -1)
    terms = np.asarray(terms, np.float64).sum(-1)
    per_t = np.where(q > 0, q * terms, 0.0).reshape(k, num_nodes, n_s).sum(-1)
    return per_t @ w_t


def tv_threshold(tgt: dd.EnumeratedTarget, num_samples: int, sigmas: float = 5.0) -> float:
    """TV that Monte-Carlo noise alone stays below (mean + `sigmas` std of exact sampling)."""
    noise = tgt.sampling_noise(num_samples)["tv"]
    return noise[0] + sigmas * noise[1]


def run_sampler(process, model_fn, sampler: str, num_steps: int, n: int, seed: int = 0, **kw):
    """Jitted `dd.sample` on `[n, L]`; returns (numpy tokens, nfe)."""
    fn = jax.jit(
        lambda key: dd.sample(
            key, process, model_fn, (n, L), sampler=sampler, num_steps=num_steps, **kw
        )
    )
    x, info = fn(jax.random.key(seed))
    return np.asarray(x), int(info["nfe"])
