"""The few-word sampling paths: inverse-CDF class draws and the masked reveal-then-draw step.

Exact answers: each class's interval of 64-bit uniforms, found by bisection on the draw as a
function of its random words (so a rare class's probability is measured exactly, not by Monte
Carlo); integer arithmetic in Python for the uniform integers; chi-square against the given
probabilities; the masked posterior from `posterior_logits` (Austin et al. 2021; MDLM eq. 7)
and remdm's reveal probability (Wang et al. 2025); softmax(logits / T) and the nucleus for
temperature / top-p.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import diffax.discrete as dd
from diffax.discrete import categorical
from diffax.discrete.samplers.ancestral import masked_posterior_draw


def _class_probability(probs, cls):
    """P(class `cls`) under the inverse-CDF draw: the width of its interval of 64-bit uniforms.

    The class is a non-decreasing function of the uniform u = k1 2^-32 + k2 2^-64, so the
    smallest u giving a class >= c is found by bisection over the 2^64 words.
    """
    logits = jnp.log(jnp.asarray(probs, jnp.float32))
    weights = jnp.exp(logits - jnp.max(logits))
    draw = jax.jit(lambda k1, k2: categorical._inverse_cdf_index(weights, k1, k2))

    def first_u_reaching(c):
        if c >= len(probs):
            return 1.0
        lo, hi = 0, 2**64 - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if int(draw(jnp.uint32(mid >> 32), jnp.uint32(mid & 0xFFFFFFFF))) >= c:
                hi = mid
            else:
                lo = mid + 1
        return lo / 2**64

    return first_u_reaching(cls + 1) - first_u_reaching(cls)


@pytest.mark.parametrize("q", [1e-7, 1e-8, 1e-9])
def test_inverse_cdf_rare_class_has_its_probability(q):
    """A rare class first, last, or between two classes of mass ~0.5 (where a float32 CDF has
    a spacing of 6e-8 and would give it probability 0 or 6e-8): drawn with probability q."""
    for probs, cls in [([q, 1 - q], 0), ([1 - q, q], 1), ([(1 - q) / 2, q, (1 - q) / 2], 1)]:
        ratio = _class_probability(probs, cls) / q
        assert abs(ratio - 1.0) < 1e-4, (probs, ratio)


def test_inverse_cdf_chi_square_down_to_1e6():
    probs = np.array([0.5, 0.3, 0.15, 0.0489, 1e-3, 1e-4, 1e-5, 1e-6])
    probs[0] += 1.0 - probs.sum()
    logits = jnp.log(jnp.asarray(probs, jnp.float32)) + 3.0
    n = 2**23
    ids = jax.jit(categorical.sample_categorical_inverse_cdf)(
        jax.random.key(0), jnp.broadcast_to(logits, (n, len(probs)))
    )
    counts = np.bincount(np.asarray(ids), minlength=len(probs))
    expected = probs * n
    assert stats.chisquare(counts, expected).pvalue > 1e-3
    assert np.all(np.abs(counts - expected) < 4.5 * np.sqrt(expected) + 1)


def test_two_level_inverse_cdf_has_the_exact_law(monkeypatch):
    """Above CDF_LEVEL classes a chunk is drawn by its mass, then a class inside it. With
    CDF_LEVEL = 16, V = 40 has chunks of 8 (the last one padded with zero weights); mass sits in
    every chunk, on chunk edges and next to the padding."""
    monkeypatch.setattr(categorical, "CDF_LEVEL", 16)
    v = 40
    probs = np.full(v, 1e-3)
    for c, p in {0: 0.1, 7: 0.1, 8: 0.1, 25: 0.2, 31: 0.1, 32: 0.1, 39: 0.2}.items():
        probs[c] = p
    probs /= probs.sum()
    n = 2**20
    logits = jnp.broadcast_to(jnp.log(jnp.asarray(probs, jnp.float32)), (n, v))
    ids = np.asarray(jax.jit(categorical.sample_categorical_inverse_cdf)(jax.random.key(3), logits))
    counts = np.bincount(ids, minlength=v)
    assert counts.sum() == n and ids.min() >= 0
    assert stats.chisquare(counts, probs * n).pvalue > 1e-3
    assert np.all(np.abs(counts - probs * n) < 4.5 * np.sqrt(probs * n) + 1)


def test_inverse_cdf_edge_rows():
    """-inf excludes a class, +inf takes all the mass, NaN / all -inf rows are invalid; the
    class axis may be any axis; a bad method name is refused."""
    rows = jnp.array(
        [
            [0.0, -jnp.inf, 0.0, 1.0],
            [0.0, jnp.inf, 0.0, 1.0],
            [0.0, jnp.nan, 0.0, 1.0],
            [-jnp.inf] * 4,
        ]
    )
    ids = np.asarray(
        categorical.sample_categorical_inverse_cdf(jax.random.key(0), jnp.tile(rows, (500, 1)))
    )
    ids = ids.reshape(500, 4)
    assert not np.any(ids[:, 0] == 1) and np.all(ids[:, 0] >= 0)
    assert np.all(ids[:, 1] == 1)
    assert np.all(ids[:, 2:] == dd.INVALID_TOKEN)
    moved = dd.sample_categorical(jax.random.key(0), rows.T, axis=0, method="inverse_cdf")
    np.testing.assert_array_equal(
        moved, categorical.sample_categorical_inverse_cdf(jax.random.key(0), rows)
    )
    with pytest.raises(ValueError, match="method must be one of"):
        dd.sample_categorical(jax.random.key(0), rows, method="gumbel")


def test_masked_reveal_then_draw_has_the_posterior_law():
    """Per position, the reveal-then-class step draws from softmax(posterior_logits): masked
    positions reveal y with probability r p(y) and stay masked with 1 - r; others stay."""
    vocab, n = 3, 2**18
    process = dd.Masked(vocab, dd.CosineSchedule())
    x = jnp.array([vocab, 1, vocab, vocab], jnp.int32)  # masked, clean, masked, masked
    log_p0 = jnp.log(jnp.array([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6], [1e-3, 0.499, 0.5], [1, 0, 0]]))
    s, t = jnp.float32(0.3), jnp.float32(0.7)
    exact = np.asarray(
        jax.nn.softmax(process.posterior_logits(x[None], s, t, log_p0[None])[0]), np.float64
    )
    exact /= exact.sum(axis=-1, keepdims=True)
    draw = jax.jit(
        jax.vmap(lambda k: masked_posterior_draw(process, k, x[None], s, t, log_p0[None]))
    )
    x_s = np.asarray(draw(jax.random.split(jax.random.key(0), n)))[:, 0]
    for pos in range(4):
        counts = np.bincount(x_s[:, pos], minlength=vocab + 1)
        keep = exact[pos] > 0
        assert np.all(counts[~keep] == 0), (pos, counts)
        if keep.sum() > 1:
            assert stats.chisquare(counts[keep], exact[pos, keep] * n).pvalue > 1e-3, pos
    r = float(process.reveal_probability(s, t)[0])
    a_s, a_t = (float(process.alpha(v)) for v in (s, t))
    np.testing.assert_allclose(r, (a_s - a_t) / (1 - a_t), rtol=1e-6)


def test_uniform_below_is_floor_of_n_times_the_64_bit_uniform():
    """Against Python integers: floor(n (k1 2^32 + k2) / 2^64) for the words the key draws,
    with n up to 2^31 - 1 (where a 32-bit product would overflow)."""
    n = np.array([1, 2, 3, 7, 255, 256, 65537, 2**31 - 1] * 64, np.int32)
    key = jax.random.key(5)
    got = np.asarray(categorical.uniform_below(key, jnp.asarray(n)))
    k1, k2 = (
        np.asarray(w).astype(object) for w in jax.random.bits(key, (2,) + n.shape, jnp.uint32)
    )
    expected = [
        (int(m) * (int(a) * 2**32 + int(b))) >> 64 for m, a, b in zip(n, k1, k2, strict=True)
    ]
    np.testing.assert_array_equal(got, np.asarray(expected))
    assert np.all((got >= 0) & (got < n))
    counts = np.bincount(np.asarray(categorical.uniform_below(key, jnp.full(2**18, 5))))
    assert stats.chisquare(counts, np.full(5, 2**18 / 5)).pvalue > 1e-3


@pytest.mark.parametrize("rows_per_pass", [None, 7, 4096])
def test_sample_where_has_the_law(rows_per_pass):
    """Selected rows get their own law whether they are drawn in one pass or many (None: 64
    rows a pass, 258 selected; 7: 37 passes, the last one part-filled); unselected rows give
    0; NaN rows stay invalid."""
    v, n_rows = 5, 4096
    probs = np.array([[0.5, 0.2, 0.15, 0.1, 0.05], [0.05, 0.05, 0.1, 0.2, 0.6]])
    logits = jnp.log(jnp.asarray(np.tile(probs, (n_rows // 2, 1)), jnp.float32)) + 7.0
    logits = logits.at[5].set(jnp.nan)
    where = jnp.zeros(n_rows, bool).at[jnp.arange(0, n_rows, 16)].set(True).at[1].set(True)
    where = where.at[5].set(True)

    def draw(k):
        return categorical.sample_categorical_where(k, logits, where, rows_per_pass=rows_per_pass)

    ids = np.asarray(jax.jit(jax.vmap(draw))(jax.random.split(jax.random.key(1), 256)))
    sel = np.asarray(where)
    assert np.all(ids[:, ~sel] == 0)
    assert np.all(ids[:, 5] == dd.INVALID_TOKEN)
    for parity in (0, 1):
        rows = np.flatnonzero(sel & (np.arange(n_rows) % 2 == parity) & (np.arange(n_rows) != 5))
        counts = np.bincount(ids[:, rows].ravel(), minlength=v)
        assert stats.chisquare(counts, probs[parity] * counts.sum()).pvalue > 1e-3, parity


def test_sample_where_unbatched_law_and_errors():
    """Outside vmap the loop runs as many passes as the selection needs; the law holds."""
    v, n_rows = 3, 512
    probs = np.array([0.7, 0.2, 0.1])
    logits = jnp.broadcast_to(jnp.log(jnp.asarray(probs, jnp.float32)), (n_rows, v))
    where = jnp.arange(n_rows) % 32 == 3
    draw = jax.jit(lambda k: categorical.sample_categorical_where(k, logits, where))
    keys = jax.random.split(jax.random.key(2), 2000)
    ids = np.stack([np.asarray(draw(k)) for k in keys])
    counts = np.bincount(ids[:, np.asarray(where)].ravel(), minlength=v)
    assert stats.chisquare(counts, probs * counts.sum()).pvalue > 1e-3
    with pytest.raises(ValueError, match="where must have shape"):
        categorical.sample_categorical_where(keys[0], logits, where[:-1])
    with pytest.raises(ValueError, match="rows_per_pass"):
        categorical.sample_categorical_where(keys[0], logits, where, rows_per_pass=0)


def _one_masked_step(sampler, model_fn, vocab, shape, s, t, n, **options):
    """`n` independent ancestral-style steps of `sampler` from all-masked x at t to s."""
    from diffax.discrete.samplers.step import Model

    process = dd.Masked(vocab)
    model = Model(process, model_fn, "denoiser", shape, **options)
    x = jnp.full(shape, vocab, jnp.int32)
    state = sampler.init(model, x, jnp.asarray([t, s]))
    step = jax.jit(lambda k: sampler.step(model, k, x, state, jnp.float32(t), jnp.float32(s))[0])
    return np.stack([np.asarray(step(k)) for k in jax.random.split(jax.random.key(4), n)])


@pytest.mark.parametrize("s", [0.0, 0.97])
def test_masked_steps_temper_unnormalised_logits(s):
    """The masked steps skip log_softmax: an output off by a large constant per position still
    gives softmax(logits / T) at temperature T, and top-p keeps exactly the nucleus. s = 0
    reveals every position (64 passes of 8 gathered rows), s = 0.97 about 3% (two passes)."""
    vocab, shape, t = 4, (64, 8), 1.0
    base = jnp.log(jnp.array([0.5, 0.3, 0.15, 0.05]))
    offset = 50.0 * jnp.arange(shape[1], dtype=jnp.float32)[None, :, None] - 100.0

    def model_fn(x, t):
        del t
        return jnp.broadcast_to(base, x.shape + (vocab,)) + offset

    reveal = float(dd.Masked(vocab).reveal_probability(s, t)[0])
    runs = 40 if s == 0.0 else 400
    tempered = np.asarray(jax.nn.softmax(base / 0.5))
    x = _one_masked_step(dd.ancestral(), model_fn, vocab, shape, s, t, runs, temperature=0.5)
    counts = np.bincount(x.ravel(), minlength=vocab + 1)
    expected = np.append(tempered * reveal, 1 - reveal) * x.size
    assert stats.chisquare(counts[expected > 0], expected[expected > 0]).pvalue > 1e-3
    # top_p = 0.7: the nucleus is {0, 1} (0.5 < 0.7 <= 0.8), renormalised to 5/8, 3/8.
    x = _one_masked_step(dd.remdm(eta=0.0), model_fn, vocab, shape, s, t, runs, top_p=0.7)
    counts = np.bincount(x.ravel(), minlength=vocab + 1)
    assert counts[2:vocab].sum() == 0
    expected = np.array([5 / 8 * reveal, 3 / 8 * reveal, 1 - reveal]) * x.size
    keep = expected > 0
    observed = np.append(counts[:2], counts[vocab])
    assert stats.chisquare(observed[keep], expected[keep]).pvalue > 1e-3


def test_remdm_extra_reveals_have_their_probability():
    """remdm "rescale" (sigma = eta sigma_max) from t to s: a masked token is revealed with
    probability (alpha_s - (1 - sigma) alpha_t) / (1 - alpha_t) (Wang et al. 2025) as a
    denoiser draw. Here two thirds of the reveals are remdm's extra ones, and about 9% of the
    positions are revealed: they share the gathered class draw with the ancestral ones."""
    vocab, shape = 3, (64, 16)
    probs = np.array([0.6, 0.3, 0.1])

    def model_fn(x, t):
        del t
        return jnp.broadcast_to(jnp.log(jnp.asarray(probs, jnp.float32)), x.shape + (vocab,))

    s, t, eta = 0.6, 0.62, 0.1
    process = dd.Masked(vocab)
    a_s, a_t = float(process.alpha(s)), float(process.alpha(t))
    sigma = eta * min(1.0, (1 - a_s) / a_t)
    reveal = (a_s - (1 - sigma) * a_t) / (1 - a_t)
    sampler = dd.remdm(eta=eta, strategy="rescale")
    x = _one_masked_step(sampler, model_fn, vocab, shape, s, t, 100)
    counts = np.bincount(x.ravel(), minlength=vocab + 1)
    expected = np.append(probs * reveal, 1 - reveal) * x.size
    assert stats.chisquare(counts, expected).pvalue > 1e-3


def test_nan_rows_are_found_in_large_batches():
    """XLA's vectorised max on CPU can skip NaN; NaN rows must still be invalid wherever the
    NaN sits, in the one- and two-level draws, the model's non-finite check and the masked
    step (also at masked positions that are not revealed)."""
    from diffax.discrete.samplers.step import non_finite

    for vocab in (4, 1024):
        logits = jax.random.normal(jax.random.key(0), (512, vocab))
        bad_rows = np.arange(0, 512, 7)
        logits = logits.at[bad_rows, (bad_rows * 13) % vocab].set(jnp.nan)
        ids = np.asarray(
            jax.jit(categorical.sample_categorical_inverse_cdf)(jax.random.key(1), logits)
        )
        assert np.all(ids[bad_rows] == dd.INVALID_TOKEN)
        assert np.all(np.delete(ids, bad_rows) >= 0)
        bad = np.asarray(jax.jit(non_finite)(logits.reshape(8, 64, vocab))).ravel()
        np.testing.assert_array_equal(np.flatnonzero(bad), bad_rows)
        process = dd.Masked(vocab)
        x = jnp.full((8, 64), vocab, jnp.int32)
        x_s = jax.jit(
            lambda k: masked_posterior_draw(
                process, k, x, jnp.float32(0.99), jnp.float32(1.0), logits.reshape(8, 64, vocab)
            )
        )(jax.random.key(2))
        x_s = np.asarray(x_s).ravel()
        assert np.all(x_s[bad_rows] == dd.INVALID_TOKEN)
        assert np.all(np.delete(x_s, bad_rows) >= 0)
