"""Categorical sampling: chi-square down to 1e-6, and the float32 Gumbel tail bias it avoids."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import diffax.discrete as dd
from diffax.discrete.categorical import exponential_from_bits


def test_chi_square_down_to_1e6():
    probs = np.array([0.5, 0.3, 0.15, 0.0489, 1e-3, 1e-4, 1e-5, 1e-6])
    probs[0] += 1.0 - probs.sum()
    logits = jnp.log(jnp.asarray(probs, jnp.float32)) + 3.0  # unnormalised on purpose
    n = 2**23
    ids = dd.sample_categorical(jax.random.key(0), jnp.broadcast_to(logits, (n, len(probs))))
    counts = np.bincount(np.asarray(ids), minlength=len(probs))
    expected = probs * n
    assert expected[-1] > 8  # the 1e-6 class is in the test
    assert stats.chisquare(counts, expected).pvalue > 1e-3
    # Each tail class on its own, within 4.5 Poisson standard deviations.
    assert np.all(np.abs(counts - expected) < 4.5 * np.sqrt(expected) + 1)


def _naive_win_probability(q: float, clip_at_tiny: bool) -> float:
    """Exact P(the class of probability q wins) for float32 Gumbel-max with 23-bit uniforms.

    Enumerates every float32 value jax.random.uniform can return (k 2^-23); `clip_at_tiny` is
    jax.random.gumbel's variant (u >= float32 tiny, so the Gumbel is truncated below).
    """
    u = jnp.arange(2**23, dtype=jnp.float32) * jnp.float32(2.0**-23)
    if clip_at_tiny:
        u = jnp.maximum(u, jnp.finfo(jnp.float32).tiny)
    g = np.asarray(-jnp.log(-jnp.log(u)))
    gap = np.float32(np.log(q)) - np.float32(np.log1p(-q))
    # The rare class (index 1) wins when its noisy logit is strictly larger (argmax: first max).
    return float((np.searchsorted(np.sort(g), g + gap, side="left") / 2**23).mean())


def _race_win_probability(q: float) -> float:
    """Exact P(rare class wins) for the 32-bit exponential race (rare-class grid enumerated)."""
    k = jnp.arange(int(60 * q * 2**32) + 16, dtype=jnp.uint32)
    e_rare = np.asarray(exponential_from_bits(k), np.float64)
    threshold = e_rare * (1.0 - q) / q  # rare wins iff E_0 > threshold; P = exp(-threshold)
    return float(np.exp(-threshold).sum() * 2.0**-32)


@pytest.mark.parametrize("q", [1e-6, 1e-7, 1e-8])
def test_float32_gumbel_is_biased_in_the_tail_and_the_race_is_not(q):
    ratio_race = _race_win_probability(q) / q
    assert abs(ratio_race - 1.0) < 1e-3
    # Truncated Gumbel (jax.random.gumbel / jax.random.categorical): rare classes undersampled,
    # a lower effective temperature. Unclipped: u = 0 gives G = -inf, oversampling them.
    ratio_truncated = _naive_win_probability(q, clip_at_tiny=True) / q
    ratio_unclipped = _naive_win_probability(q, clip_at_tiny=False) / q
    assert ratio_truncated < {1e-6: 0.95, 1e-7: 0.6, 1e-8: 0.01}[q]
    assert ratio_unclipped > {1e-6: 1.05, 1e-7: 1.5, 1e-8: 10.0}[q]


def test_temperature_and_top_p():
    logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
    np.testing.assert_allclose(dd.apply_temperature(logits, 2.0), logits / 2.0)
    kept = np.isfinite(np.asarray(dd.top_p_filter(logits, 0.75)))
    np.testing.assert_array_equal(kept, [[True, True, False, False]])
    kept = np.isfinite(np.asarray(dd.top_p_filter(logits, 0.85)))
    np.testing.assert_array_equal(kept, [[True, True, True, False]])
    assert np.isfinite(np.asarray(dd.top_p_filter(logits, 1e-6))).sum() == 1
    np.testing.assert_array_equal(dd.top_p_filter(logits, 1.0), logits)
    with pytest.raises(ValueError, match="temperature"):
        dd.apply_temperature(logits, 0.0)
    with pytest.raises(ValueError, match="top_p"):
        dd.top_p_filter(logits, 1.5)


def test_minus_inf_excludes_a_class():
    logits = jnp.array([0.0, -jnp.inf, 0.0])
    ids = dd.sample_categorical(jax.random.key(1), jnp.broadcast_to(logits, (10000, 3)))
    assert not np.any(np.asarray(ids) == 1)
    assert ids.dtype == jnp.int32


def test_rows_without_a_valid_class_give_minus_one():
    """NaN logits (or no class of positive probability) are not a draw of class 0: such rows
    give the out-of-range id -1, which samplers keep and report."""
    logits = jnp.array([[0.0, jnp.nan, 0.0], [-jnp.inf, -jnp.inf, -jnp.inf], [0.0, 1.0, 2.0]])
    ids = dd.sample_categorical(jax.random.key(0), jnp.tile(logits, (1000, 1)))
    ids = np.asarray(ids).reshape(1000, 3)
    assert np.all(ids[:, 0] == -1) and np.all(ids[:, 1] == -1)
    assert np.all((ids[:, 2] >= 0) & (ids[:, 2] < 3))


def test_chunked_race_for_large_vocabularies_has_the_exact_law(monkeypatch):
    """Vocabularies above RACE_CHUNK race in chunks (the last one shifted back to end at V);
    with a chunk of 16 and V = 40 the chunks are [0, 16), [16, 32) and [24, 40) minus the
    classes it shares with the second. Each class must win with its own probability."""
    from diffax.discrete import categorical

    monkeypatch.setattr(categorical, "RACE_CHUNK", 16)
    v = 40
    # Mass on classes in every chunk, on both chunk edges and in the shared range [24, 32).
    probs = np.full(v, 1e-3)
    for c, p in {0: 0.1, 15: 0.1, 16: 0.1, 25: 0.2, 31: 0.1, 32: 0.1, 39: 0.2}.items():
        probs[c] = p
    probs /= probs.sum()
    n = 2**20
    logits = jnp.broadcast_to(jnp.log(jnp.asarray(probs, jnp.float32)), (n, v))
    ids = np.asarray(jax.jit(categorical.sample_categorical)(jax.random.key(3), logits))
    counts = np.bincount(ids, minlength=v)
    assert counts.sum() == n and ids.min() >= 0
    assert stats.chisquare(counts, probs * n).pvalue > 1e-3
    assert np.all(np.abs(counts - probs * n) < 4.5 * np.sqrt(probs * n) + 1)


def test_chunked_race_keeps_invalid_rows_invalid(monkeypatch):
    from diffax.discrete import categorical

    monkeypatch.setattr(categorical, "RACE_CHUNK", 16)
    logits = jnp.zeros((3, 40)).at[1, 30].set(jnp.nan).at[2].set(-jnp.inf)
    ids = categorical.sample_categorical(jax.random.key(0), logits)
    assert int(ids[0]) >= 0 and list(np.asarray(ids[1:])) == [dd.INVALID_TOKEN] * 2
