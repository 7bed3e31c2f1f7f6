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
"""

from __future__ import annotations

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


def sample_categorical(key: jax.Array, logits: jax.Array, axis: int = -1) -> jax.Array:
    """Draws one class index per row of unnormalised log-probabilities.

    Args:
      key: PRNG key.
      logits: `[..., V]` float (any float dtype; computed in float32). `-inf` excludes a class.
      axis: the class axis.

    Returns:
      int32 ids with the shape of `logits` without `axis`. A row that has no valid draw (a NaN
      entry, or all classes at -inf) gives `INVALID_TOKEN` (-1) rather than class 0, which
      `argmax` would silently return.

    Reference: the Gumbel-max / exponential-race identity (Yellott 1977), with 32-bit exponentials.
    """
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
