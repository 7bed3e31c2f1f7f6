"""Semi-autoregressive decoding through the CachedModel protocol (LLaDA / Fast-dLLM caches).

Exact answers: the enumerated law of the block confidence sampler (`exact_confidence_law`); the
tokens of `block_sample` with the uncached reference `BlockModel` (the same per-block loop and
keys, the exact denoiser seeing the same clean prefix); the network-call and token counts of each
cache mode, computed by hand.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_fast_samplers import (
    L6,
    MASKED,
    MODEL6,
    TGT6,
    exact_confidence_law,
    law_noise,
    law_tv,
    per_sequence,
)

import diffax.discrete as dd
from diffax.discrete.blocks.semi_ar import semi_ar_sample

EXACT = dd.full_cached_model(MODEL6)


def _semi_ar(n, key=0, **kw):
    fn = jax.jit(lambda k: semi_ar_sample(k, MASKED, EXACT, (n, L6), **kw))
    x, info = fn(jax.random.key(key))
    return np.asarray(x), int(info["nfe"]), int(info["token_evals"])


@pytest.mark.parametrize(
    "sampler, options",
    [("confidence", {}), ("ancestral", {}), ("remdm", {"eta": 0.2})],
)
def test_every_cache_mode_gives_the_same_tokens_with_an_exact_model(sampler, options):
    """K = 2, 2 steps per block, L = 6. Network calls and positions processed per sequence:
    none: 6 full calls (36); prefix: per block one full call and one window [start, L)
    (6 + 6, 6 + 4, 6 + 2 = 30); dual: per block one full call and one block call (3 * 8 = 24),
    with refresh_every=1 every call is full (36)."""
    kw = dict(block_size=2, steps_per_block=2, sampler=sampler, **options)
    ref, nfe, evals = _semi_ar(128, cache="none", **kw)
    assert (nfe, evals) == (6, 36)
    expected = {"prefix": (0, 30), "dual": (0, 24), "dual-1": (0, 36)}
    for mode, (_, want) in expected.items():
        cache, every = ("dual", 1) if mode == "dual-1" else (mode, 0)
        x, nfe, evals = _semi_ar(128, cache=cache, refresh_every=every, **kw)
        np.testing.assert_array_equal(x, ref)
        assert (nfe, evals) == (6, want), mode


def test_uncached_semi_ar_equals_block_sampling_with_the_exact_denoiser():
    """For the exact denoiser a full-attention pass over [clean prefix, block, masked suffix]
    is the block-conditional denoiser, so semi-AR decoding with cache="none" draws the tokens
    `block_sample` draws with the uncached reference BlockModel (same key per block)."""
    block_model = dd.uncached_block_model(dd.blocks.per_token_time(MODEL6), MASKED.mask_id)
    for sampler in ("confidence", "ancestral"):
        kw = dict(block_size=3, steps_per_block=3, sampler=sampler)
        x, _, _ = _semi_ar(128, key=5, cache="dual", **kw)
        y, _ = jax.jit(lambda k, kw=kw: dd.block_sample(k, MASKED, block_model, (128, L6), **kw))(
            jax.random.key(5)
        )
        np.testing.assert_array_equal(x, np.asarray(y))


def test_semi_ar_confidence_has_the_law_of_block_confidence_decoding():
    """The law of semi-AR confidence decoding (K = 2, 2 steps a block) is the enumerated law of
    `confidence(block_length=2)` (also `dd.sample`'s); it is not the target's (TV ~ 0.33)."""
    n = 4000
    law = exact_confidence_law(TGT6, 2, 2)
    x, nfe, _ = _semi_ar(n, cache="prefix", block_size=2, steps_per_block=2)
    assert law_tv(TGT6, x, law) < law_noise(law, n)
    step = dd.confidence(block_length=2)
    y, info = jax.jit(lambda k: dd.sample(k, MASKED, MODEL6, (n, L6), sampler=step, num_steps=6))(
        jax.random.key(1)
    )
    assert law_tv(TGT6, np.asarray(y), law) < law_noise(law, n)
    assert nfe == int(info["nfe"]) == 6
    assert 0.5 * np.abs(law - TGT6.probs).sum() > 0.3


def test_threshold_decoding_in_blocks_calls_the_network_less():
    """Confidence threshold inside semi-AR blocks (per sequence, as with batch 1): the law is
    the enumerated one and fewer calls are made than the 6 of one token per step."""
    tgt = dd.EnumeratedTarget.markov_chain(1, 4, L6, concentration=0.1)
    exact = dd.full_cached_model(tgt.denoiser(MASKED))
    n = 2000

    def fn(key, threshold):
        return semi_ar_sample(
            key,
            MASKED,
            exact,
            (1, L6),
            block_size=2,
            steps_per_block=2,
            cache="dual",
            threshold=threshold,
        )

    x, nfe = per_sequence(fn, n, jnp.float32(0.9))
    law = exact_confidence_law(tgt, 2, 2, threshold=0.9)
    assert law_tv(tgt, x, law) < law_noise(law, n)
    assert nfe < 5.0


def test_prompts_are_kept_and_prompt_blocks_cost_nothing():
    fixed = jnp.tile(jnp.array([[1, 2, 3, 0, 0, 0]], jnp.int32), (64, 1))
    mask = jnp.tile(jnp.array([[True, True, True, False, True, False]]), (64, 1))
    for cache in ("none", "prefix", "dual"):
        x, nfe, evals = _semi_ar(
            64, cache=cache, block_size=3, steps_per_block=2, fixed_tokens=fixed, fixed_mask=mask
        )
        np.testing.assert_array_equal(x[:, [0, 1, 2, 4]], np.asarray(fixed)[:, [0, 1, 2, 4]])
        assert np.all((x >= 0) & (x < 4))
        # Block 0 is all prompt (skipped); block 1 has 2 masks: 2 steps, one call each.
        assert nfe == 2, (cache, nfe)
        assert evals == {"none": 12, "prefix": 6 + 3, "dual": 6 + 3}[cache]


def test_non_finite_output_is_reported():
    def nan_model(x, t):
        return MODEL6(x, t).at[:, 4].set(jnp.nan)

    cached = dd.full_cached_model(nan_model)
    with pytest.raises(ValueError, match="not finite"):
        semi_ar_sample(jax.random.key(0), MASKED, cached, (2, L6), block_size=2, steps_per_block=1)
    x, _ = jax.jit(
        lambda k: semi_ar_sample(k, MASKED, cached, (8, L6), block_size=2, steps_per_block=1)
    )(jax.random.key(0))
    assert np.all(np.asarray(x)[:, 4] == -1) and np.all(np.asarray(x)[:, :4] >= 0)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(cache="full"), ValueError, "allowed values: 'none', 'prefix', 'dual'"),
        (dict(cache="prefix", refresh_every=2), ValueError, "refresh_every"),
        (dict(refresh_every=-1, cache="dual"), ValueError, "refresh_every"),
        (dict(block_size=4), ValueError, "block_size"),
        (dict(steps_per_block=0), ValueError, "steps_per_block"),
        (dict(bogus=1), ValueError, "bogus"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, match):
    kw = dict(block_size=2, steps_per_block=2) | kwargs
    with pytest.raises(error, match=match):
        semi_ar_sample(jax.random.key(0), MASKED, EXACT, (2, L6), **kw)


def test_bad_model_and_process():
    with pytest.raises(TypeError, match="CachedModel"):
        semi_ar_sample(jax.random.key(0), MASKED, MODEL6, (2, L6), block_size=2, steps_per_block=1)
    with pytest.raises(TypeError, match="absorbing"):
        semi_ar_sample(
            jax.random.key(0), dd.Uniform(4), EXACT, (2, L6), block_size=2, steps_per_block=1
        )
