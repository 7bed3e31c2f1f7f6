"""Categorical sampling that is exact in float32.

The textbook Gumbel-max trick `argmax(logits - log(-log(u)))` with a float32 uniform `u` has 23-24
random bits: the largest Gumbel it can produce is about 16.6 and the smallest exponential
`-log(u)` is quantised in steps of 6e-8, so classes with probability below ~1e-7 are under-sampled
(a lower effective temperature; Zheng et al. 2024, "Masked diffusion models are secretly
time-agnostic masked models and exploit inaccurate categorical sampling").

Here the exponential variates of the equivalent "exponential race" argmin_i E_i / p_i are built
from 32 random bits as E = -log1p(-w), w = (k + 1/2) 2^-32: small E (which decide when a rare
class wins) have absolute resolution 2^-32 and full float32 relative precision, and the race is
only truncated beyond E = 22.9 (probability 1e-10).

The race needs one 32-bit word per class. `sample_categorical_inverse_cdf` (or
`method="inverse_cdf"`) draws the same law from two words per row (four above `CDF_LEVEL` classes):
an inverse CDF on a 64-bit uniform, with the CDF accumulated in double-float (a pair of float32
numbers, about 48 bits) so that a class of probability 1e-9 next to a class of probability 0.5
keeps an interval of width 1e-9 to a relative 1e-5. Large vocabularies take two levels (a chunk by
its mass, then a class inside the chunk), so the sequential double-float work is O(sqrt(V)) per
row, not O(V).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from diffax.core import is_concrete

_TWO_POW_M32 = 2.0**-32

#: The id returned for a row of logits without a valid draw (NaN entries, or every class at
#: -inf). Out of range for every vocabulary, so it cannot pass for a token; the samplers keep it
#: and report it (see docs/discrete.md, "Non-finite model outputs").
INVALID_TOKEN = -1


def exponential_from_bits(bits: jax.Array) -> jax.Array:
    """Maps uint32 random bits k to the exponential variate -log1p(-(k + 1/2) 2^-32), float32."""
    w = (bits.astype(jnp.float32) + 0.5) * _TWO_POW_M32
    # float32(k) can round up to 2^32 for the largest k; keep w < 1 so E stays finite.
    w = jnp.minimum(w, 1.0 - 2.0**-24)
    return -jnp.log1p(-w)


def exponential_32bit(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Standard exponential variates with 32-bit resolution near zero. Returns float32 `shape`."""
    return exponential_from_bits(jax.random.bits(key, shape, dtype=jnp.uint32))


#: The ways `sample_categorical` can draw: "race" (one 32-bit word per class) and
#: "inverse_cdf" (two or four 32-bit words per row; see the module docstring).
METHODS = ("race", "inverse_cdf")


def sample_categorical(
    key: jax.Array, logits: jax.Array, axis: int = -1, *, method: str = "race"
) -> jax.Array:
    """Draws one class index per row of unnormalised log-probabilities.

    Args:
      key: PRNG key.
      logits: `[..., V]` float (any float dtype; computed in float32). `-inf` excludes a class.
      axis: the class axis.
      method: "race" (the exponential race, one 32-bit word per class) or "inverse_cdf"
        (`sample_categorical_inverse_cdf`, two or four words per row). Same law, different
        draws.

    Returns:
      int32 ids with the shape of `logits` without `axis`. A row that has no valid draw (a NaN
      entry, or all classes at -inf) gives `INVALID_TOKEN` (-1) rather than class 0, which
      `argmax` would silently return.

    Reference: the Gumbel-max / exponential-race identity (Yellott 1977), with 32-bit exponentials.
    """
    if method == "inverse_cdf":
        return sample_categorical_inverse_cdf(key, logits, axis)
    if method != "race":
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    logits = jnp.moveaxis(jnp.asarray(logits, jnp.float32), axis, -1)
    if logits.shape[-1] <= RACE_CHUNK:
        e = exponential_32bit(key, logits.shape)
        # argmax(logits - log E) == argmin(E / p): the exponential race.
        ids = jnp.argmax(logits - jnp.log(e), axis=-1).astype(jnp.int32)
    else:
        ids = _chunked_race(key, logits)
    invalid = jnp.any(jnp.isnan(logits), axis=-1) | jnp.all(logits == -jnp.inf, axis=-1)
    return jnp.where(invalid, INVALID_TOKEN, ids)


#: Vocabularies larger than this run the exponential race in chunks of this many classes, so
#: the random bits (several times the size of the logits while they are generated) exist for
#: one chunk at a time: a 50k-vocabulary draw then needs about 1.1x the logits' memory extra
#: instead of 4x (the loop holds one copy of the logits).
RACE_CHUNK = 2048


def _chunked_race(key: jax.Array, logits: jax.Array) -> jax.Array:
    """The exponential race over `[..., V]` logits in chunks of `RACE_CHUNK` classes.

    Each class gets one exponential variate (chunk i draws from `fold_in(key, i)`); the
    winner is the argmax over the chunk winners, so the law is exactly that of the unchunked
    race. The last chunk is shifted to end at V, and classes it shares with the previous chunk
    are excluded from it, so no slice is padded and no class races twice.
    """
    v = logits.shape[-1]
    n = -(-v // RACE_CHUNK)

    def body(i, carry):
        best, best_id = carry
        start = jnp.minimum(i * RACE_CHUNK, v - RACE_CHUNK)
        chunk = jax.lax.dynamic_slice_in_dim(logits, start, RACE_CHUNK, axis=-1)
        e = exponential_32bit(jax.random.fold_in(key, i), chunk.shape)
        cols = start + jnp.arange(RACE_CHUNK)
        score = jnp.where(cols >= i * RACE_CHUNK, chunk - jnp.log(e), -jnp.inf)
        value = jnp.max(score, axis=-1)
        ids = start + jnp.argmax(score, axis=-1).astype(jnp.int32)
        better = value > best
        return jnp.where(better, value, best), jnp.where(better, ids, best_id)

    init = (
        jnp.full(logits.shape[:-1], -jnp.inf, jnp.float32),
        jnp.zeros(logits.shape[:-1], jnp.int32),
    )
    return jax.lax.fori_loop(0, n, body, init)[1]


def uniform_from_bits(bits: jax.Array) -> jax.Array:
    """Maps uint32 random bits k to the float32 uniform (k + 1/2) 2^-32 in (0, 1]."""
    return (bits.astype(jnp.float32) + 0.5) * _TWO_POW_M32


def bernoulli_32bit(key: jax.Array, p: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """`shape` bool draws, True with probability `p` (broadcast to `shape`) to 2^-32.

    One 32-bit word per draw; `p >= 1` is always True (a float32 uniform can round up to 1).
    """
    w = uniform_from_bits(jax.random.bits(key, shape, dtype=jnp.uint32))
    return (w < p) | (p >= 1.0)


def _mul_32x32(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The 64-bit product of uint32 `a` and `b` as (high word, low word), in uint32 arithmetic."""
    a0, a1 = a & 0xFFFF, a >> 16
    b0, b1 = b & 0xFFFF, b >> 16
    p01, p10 = a0 * b1, a1 * b0
    mid = ((a0 * b0) >> 16) + (p01 & 0xFFFF) + (p10 & 0xFFFF)
    return a1 * b1 + (p01 >> 16) + (p10 >> 16) + (mid >> 16), a * b


def uniform_below(key: jax.Array, n: jax.Array) -> jax.Array:
    """Integers uniform on {0, ..., n - 1}, one per entry of `n`, from two 32-bit words each.

    floor(n u) for the 64-bit uniform u = (k1 2^32 + k2) 2^-64, computed exactly in integer
    arithmetic: each value has probability 1/n to a relative n 2^-64. An entry with n <= 0
    gives 0.

    Args:
      key: PRNG key. n: int array (any shape), the number of choices, < 2^31.

    Returns:
      int32 array with the shape of `n`.

    Reference: Lemire 2019, Fast Random Integer Generation in an Interval (multiply-shift,
    here with a 64-bit fraction instead of rejection).
    """
    n = jnp.asarray(n)
    nu = jnp.maximum(n, 0).astype(jnp.uint32)
    k1, k2 = jax.random.bits(key, (2,) + n.shape, dtype=jnp.uint32)
    hi1, lo1 = _mul_32x32(k1, nu)
    hi2, _ = _mul_32x32(k2, nu)
    # n (k1 2^32 + k2) = hi1 2^64 + (lo1 + hi2) 2^32 + ...: the carry of lo1 + hi2 is the rest.
    carry = (lo1 + hi2 < lo1).astype(jnp.uint32)
    return (hi1 + carry).astype(jnp.int32)


#: Rows of at most this many classes take a one-level inverse CDF; larger ones two levels
#: (chunks of about sqrt(V) classes).
CDF_LEVEL = 64
#: A double-float accumulation over at most this many terms is unrolled; longer ones scan.
_UNROLL = 8


def _two_sum(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    """s + e == a + b exactly (Knuth's TwoSum; additions only, so FMA contraction is harmless)."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _df_add(hi: jax.Array, lo: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The double-float (hi, lo) plus the float32 x, renormalised."""
    s, e = _two_sum(hi, x)
    return _two_sum(s, lo + e)


def _split12(a: jax.Array) -> tuple[jax.Array, jax.Array]:
    """a == h + l with h the top 12 significant bits of a (mantissa masked) and l the rest."""
    h = jax.lax.bitcast_convert_type(
        jax.lax.bitcast_convert_type(a, jnp.uint32) & jnp.uint32(0xFFFFF000), jnp.float32
    )
    return h, a - h


def _df_mul(a_hi, a_lo, b_hi, b_lo) -> tuple[jax.Array, jax.Array]:
    """(a_hi + a_lo) (b_hi + b_lo) as a double-float, for non-negative finite inputs.

    a_hi b_hi is split into four products of 12-bit halves, each exact in float32 (the split
    masks bits instead of Dekker's multiply-subtract, so fused multiply-adds cannot change it).
    """
    ah, al = _split12(a_hi)
    bh, bl = _split12(b_hi)
    hi, lo = _two_sum(ah * bh, ah * bl)
    hi, lo = _df_add(hi, lo, al * bh)
    hi, lo = _df_add(hi, lo, al * bl)
    return _df_add(hi, lo, a_hi * b_lo + a_lo * b_hi)


def _uniform64(k1: jax.Array, k2: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The uniform u = k1 2^-32 + (k2 + 1/2) 2^-64 in (0, 1) as a double-float (hi, lo)."""
    hi = (k1 >> 8).astype(jnp.float32) * 2.0**-24
    lo = (k1 & 0xFF).astype(jnp.float32) * _TWO_POW_M32 + uniform_from_bits(k2) * _TWO_POW_M32
    return hi, lo


def _inverse_cdf_index(q: jax.Array, k1: jax.Array, k2: jax.Array) -> jax.Array:
    """The first k with sum_{i<=k} q_i > u sum_i q_i, for `[..., K]` weights q >= 0.

    The cumulative sums are double-floats, the uniform has 64 bits (words `k1`, `k2`, shape
    `[...]`): a class's interval has its width to about 2^-48 of the row total. The rare row
    where rounding leaves the target at or above the total (probability ~2^-48) takes the
    largest weight.
    """
    terms = jnp.moveaxis(q, -1, 0)
    hi = jnp.zeros(q.shape[:-1], jnp.float32)
    lo = jnp.zeros(q.shape[:-1], jnp.float32)
    if terms.shape[0] <= _UNROLL:
        his, los = [], []
        for term in terms:
            hi, lo = _df_add(hi, lo, term)
            his.append(hi)
            los.append(lo)
        c_hi, c_lo = jnp.stack(his), jnp.stack(los)
    else:

        def body(carry, term):
            carry = _df_add(*carry, term)
            return carry, carry

        (hi, lo), (c_hi, c_lo) = jax.lax.scan(body, (hi, lo), terms)
    t_hi, t_lo = _df_mul(*_uniform64(k1, k2), hi, lo)
    # c_k <= T in double-float: c_hi - t_hi is exact whenever the two are close (Sterbenz).
    below = (c_hi - t_hi) + (c_lo - t_lo) <= 0.0
    idx = jnp.sum(below, axis=0, dtype=jnp.int32)
    return jnp.where(idx < q.shape[-1], idx, jnp.argmax(q, axis=-1).astype(jnp.int32))


def _shifted_weights(logits: jax.Array, top: jax.Array) -> jax.Array:
    """exp(logits - top) per row, `top` the row maximum (`row_top`, `[..., 1]`, broadcast).

    A +inf logit takes all the mass (the race's argmax does the same): logits are capped at the
    largest float32 and such a row is shifted by it, so its +inf classes get weight 1 and its
    finite ones 0. Rows with top = NaN or -inf get weights that the caller discards. A min, a
    subtraction and an exp per class (no select), so XLA fuses them into the reduction or
    gather that consumes them instead of writing `[..., V]` weights out.
    """
    big = jnp.finfo(jnp.float32).max
    shift = jnp.where(jnp.isfinite(top), top, jnp.where(top == jnp.inf, big, 0.0))
    return jnp.exp(jnp.minimum(logits, big) - shift)


def _max_nan_wins(a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.where((a > b) | jnp.isnan(a), a, b)


def row_top(logits: jax.Array) -> jax.Array:
    """The maximum of each row of `[..., V]` logits, NaN if the row holds a NaN. Returns `[...]`.

    A reduction with its own comparison: XLA's vectorised max on CPU can drop a NaN, and
    `max(where(isnan, inf, x))` writes the selected array out before reducing (ten times the
    time). +inf where a row holds +inf and no NaN, -inf where every class is -inf. The model's
    non-finite check (`diffax.discrete.samplers.step.non_finite`) and the inverse-CDF draw
    reduce the same output with it, and XLA computes it once.
    """
    logits = jnp.asarray(logits)
    neg_inf = jnp.array(-jnp.inf, logits.dtype)
    return jax.lax.reduce(logits, neg_inf, _max_nan_wins, (logits.ndim - 1,))


def sample_categorical_inverse_cdf(key: jax.Array, logits: jax.Array, axis: int = -1) -> jax.Array:
    """Draws one class per row by inverse CDF: two or four 32-bit random words per row, not V.

    Same law and conventions as `sample_categorical` (-inf excludes a class; a row with a NaN,
    or with every class at -inf, gives `INVALID_TOKEN`), with the random work of a row
    independent of V. The weights are exp(logits - max) in float32 (each to its own relative
    precision, as in the race); their cumulative sums are double-floats and the uniform has 64
    bits (two words), so rare classes are not under-sampled: a class of probability q >= 1e-12
    is drawn with probability q (1 + O(1e-6)) wherever it sits in the row. Rows of more than
    `CDF_LEVEL` classes first pick a chunk of about sqrt(V) classes by its mass, then a class
    inside it (two uniforms, four words). The logits are read twice (row maximum; chunk
    masses) and the chosen chunk once more; no `[..., V]` array is written.

    Args:
      key: PRNG key.
      logits: `[..., V]` float (computed in float32); only their differences within a row
        matter (unnormalised logits need no `log_softmax` first).
      axis: the class axis.

    Returns:
      int32 ids with the shape of `logits` without `axis`.

    Reference: inverse transform sampling (e.g. Devroye 1986, Non-Uniform Random Variate
    Generation, sec. III.2); double-float sums after Dekker 1971 and Knuth's TwoSum.
    """
    logits = jnp.moveaxis(jnp.asarray(logits, jnp.float32), axis, -1)
    return _inverse_cdf_draw(key, logits, row_top(logits)[..., None])


def _inverse_cdf_draw(key: jax.Array, logits: jax.Array, top: jax.Array) -> jax.Array:
    """`sample_categorical_inverse_cdf` given the row maxima `top` (`row_top`, `[..., 1]`)."""
    v = logits.shape[-1]
    if v <= CDF_LEVEL:
        words = jax.random.bits(key, (2,) + logits.shape[:-1], dtype=jnp.uint32)
        ids = _inverse_cdf_index(_shifted_weights(logits, top), words[0], words[1])
    else:
        words = jax.random.bits(key, (4,) + logits.shape[:-1], dtype=jnp.uint32)
        chunk = 1 << max(3, math.isqrt(v - 1).bit_length())  # ~sqrt(V), a power of 2
        n_chunks = -(-v // chunk)
        if n_chunks * chunk != v:
            pad = [(0, 0)] * (logits.ndim - 1) + [(0, n_chunks * chunk - v)]
            logits = jnp.pad(logits, pad, constant_values=-jnp.inf)
        blocks = logits.reshape(logits.shape[:-1] + (n_chunks, chunk))
        j = _inverse_cdf_index(
            jnp.sum(_shifted_weights(blocks, top[..., None]), axis=-1), words[0], words[1]
        )
        inside = jnp.take_along_axis(blocks, j[..., None, None], axis=-2)[..., 0, :]
        inner = _inverse_cdf_index(_shifted_weights(inside, top), words[2], words[3])
        ids = j * chunk + inner
    # NaN (`row_top` finds it even where XLA's max would not), or every class excluded.
    invalid = jnp.isnan(top[..., 0]) | (top[..., 0] == -jnp.inf)
    return jnp.where(invalid, INVALID_TOKEN, ids)


#: `sample_categorical_where` draws the selected rows in passes of 1 / `PASS_FRACTION` of the
#: rows (at least one row).
PASS_FRACTION = 64


def sample_categorical_where(
    key: jax.Array, logits: jax.Array, where: jax.Array, *, rows_per_pass: int | None = None
) -> jax.Array:
    """`sample_categorical_inverse_cdf` for the rows where `where` is True; the others give 0.

    Only the selected rows are gathered and drawn, `rows_per_pass` at a time in a loop of
    ceil(selected / rows_per_pass) passes, so the exp and sums over V are spent on the
    positions whose class is used (a masked step reveals a few percent of its positions) and
    the time follows the number selected. Each selected row gets an independent draw from its
    own logits: pass i draws with `fold_in(key, i)`, and the words are independent of `where`.

    Args:
      key: PRNG key.
      logits: `[..., V]` float logits (a constant per row may be added).
      where: `[...]` bool, the rows to draw.
      rows_per_pass: rows gathered per pass (static int); None: 1 / `PASS_FRACTION` of the
        rows, at least 1.

    Returns:
      int32 `[...]`: a class (or `INVALID_TOKEN`, see `sample_categorical`) where `where` is
      True, 0 elsewhere.

    Reference: inverse transform sampling (Devroye 1986, sec. III.2), as in
    `sample_categorical_inverse_cdf`.
    """
    logits = jnp.asarray(logits, jnp.float32)
    batch_shape, v = logits.shape[:-1], logits.shape[-1]
    if where.shape != batch_shape:
        raise ValueError(
            f"where must have shape {batch_shape} (logits without the class axis), "
            f"got {where.shape}"
        )
    n = math.prod(batch_shape)
    if rows_per_pass is None:
        rows_per_pass = -(-n // PASS_FRACTION)
    if not (isinstance(rows_per_pass, int) and rows_per_pass >= 1):
        raise ValueError(f"rows_per_pass must be a positive int, got {rows_per_pass!r}")
    rows_per_pass = min(rows_per_pass, max(n, 1))
    flat, rows = logits.reshape(n, v), where.reshape(n)
    # The selected rows first, then n (past the end: gathers zeros, dropped when scattering).
    order = jnp.nonzero(rows, size=n, fill_value=n)[0]
    padded = jnp.concatenate([order, jnp.full(rows_per_pass, n, order.dtype)])

    def one_pass(i, ids):
        idx = jax.lax.dynamic_slice_in_dim(padded, i * rows_per_pass, rows_per_pass)
        sub = flat.at[idx].get(mode="fill", fill_value=0.0)
        drawn = sample_categorical_inverse_cdf(jax.random.fold_in(key, i), sub)
        return ids.at[idx].set(drawn, mode="drop")

    passes = -(-jnp.sum(rows, dtype=jnp.int32) // rows_per_pass)
    ids = jax.lax.fori_loop(0, passes, one_pass, jnp.zeros(n, jnp.int32))
    return ids.reshape(batch_shape)


def apply_temperature(logits: jax.Array, temperature: float) -> jax.Array:
    """Divides logits by `temperature` (> 0); `temperature = 1` returns them unchanged.

    Args:
      logits: `[..., V]` float. temperature: a positive number (checked when concrete; a traced
        temperature, e.g. swept under `jit`, is used as is).

    Returns:
      `[..., V]` float32.
    """
    if is_concrete(temperature) and not float(temperature) > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logits = jnp.asarray(logits, jnp.float32)
    if is_concrete(temperature) and float(temperature) == 1.0:
        return logits
    return logits / temperature


def top_p_filter(logits: jax.Array, top_p: float) -> jax.Array:
    """Nucleus filtering: keeps the smallest set of classes whose probability reaches `top_p`.

    Classes outside the nucleus get `-inf`; the most likely class is always kept, ties at the
    boundary are kept together. `top_p = 1` returns the logits unchanged.

    Args:
      logits: `[..., V]` float. top_p: a number in (0, 1] (checked when concrete; may be traced).

    Returns:
      `[..., V]` float32 logits.

    Reference: Holtzman et al. 2020, The Curious Case of Neural Text Degeneration.
    """
    if is_concrete(top_p) and not 0.0 < float(top_p) <= 1.0:
        raise ValueError(f"top_p must lie in (0, 1], got {top_p}")
    logits = jnp.asarray(logits, jnp.float32)
    if is_concrete(top_p) and float(top_p) == 1.0:
        return logits
    probs = jax.nn.softmax(logits, axis=-1)
    sorted_probs = jnp.sort(probs, axis=-1)[..., ::-1]
    # Probability mass strictly before each sorted class: a class is in the nucleus while the
    # mass of the more likely classes has not yet reached top_p.
    before = jnp.cumsum(sorted_probs, axis=-1) - sorted_probs
    in_nucleus = before < top_p
    threshold = jnp.min(jnp.where(in_nucleus, sorted_probs, jnp.inf), axis=-1, keepdims=True)
    return jnp.where(probs >= threshold, logits, -jnp.inf)
