"""Block diffusion (BD3-LM): the block NELBO and block-by-block sampling, against enumeration."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffax.discrete as dd
from diffax.discrete.blocks import per_token_time

V = 4


def _target(length: int, seed: int = 0) -> dd.EnumeratedTarget:
    return dd.EnumeratedTarget.markov_chain(seed, V, length, concentration=0.5)


def _exact_block_model(target, process):
    """The exact block-conditional denoiser, rerun on the whole sequence (uncached)."""
    return dd.uncached_block_model(per_token_time(target.denoiser(process)), process.mask_id)


def _exact_two_stream(target, process, block_size):
    return dd.per_block_two_stream(
        per_token_time(target.denoiser(process)), block_size, mask_id=process.mask_id
    )


def _random_model(length: int, seed: int = 0):
    """A deterministic network of x_t: logits at l from a table of (l, x_t^l, x_t^{l-1})."""
    table = jax.random.normal(jax.random.key(seed), (length, V + 1, V + 1, V))

    def model_fn(x_t, t):
        prev = jnp.concatenate([jnp.full_like(x_t[:, :1], V), x_t[:, :-1]], axis=1)
        return table[jnp.arange(length)[None, :], x_t, prev] * (1.0 + t[:, None, None])

    return model_fn


def test_one_block_is_masked_elbo():
    length, process = 6, dd.Masked(V)
    model_fn = _random_model(length)
    two_stream = lambda tokens, t: model_fn(tokens[:, :length], t[:, 0])
    x0 = _target(length).sample(jax.random.key(1), 32)
    for seed in range(3):
        key = jax.random.key(seed)
        expected = dd.masked_elbo(key, process, model_fn, x0)
        got = dd.block_masked_elbo(key, process, two_stream, x0, block_size=length)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))


def test_block_size_one_at_t1_is_the_autoregressive_nll():
    """K = 1 with every block at t = 1 (all masked, weight 1): the AR NLL of the same outputs."""
    length, process = 5, dd.Masked(V)
    table = jax.random.normal(jax.random.key(3), (V + 1, V))

    def two_stream(tokens, t):  # a bigram model reading the clean stream
        x0 = tokens[:, length:]
        prev = jnp.concatenate([jnp.full_like(x0[:, :1], V), x0[:, :-1]], axis=1)
        return table[prev]

    x0 = _target(length).sample(jax.random.key(0), 16)
    prev = np.concatenate([np.full((16, 1), V), np.asarray(x0)[:, :-1]], axis=1)
    log_p = jax.nn.log_softmax(table, axis=-1)
    ar_nll = -np.asarray(log_p)[prev, np.asarray(x0)].sum(axis=1)
    t = jnp.ones((16, length))
    got = dd.block_masked_elbo(jax.random.key(1), process, two_stream, x0, t, block_size=1)
    np.testing.assert_allclose(np.asarray(got), ar_nll, rtol=1e-5)


def _exact_expectation(target, process, block_size, x0, t_of_block):
    """E over masks of the block NELBO integrand at per-block times (linear schedule), exactly.

    Enumerates every mask pattern of every block; the denoiser is the exact block conditional.
    Returns `[num_blocks]`: w(t_b) * sum over patterns P(pattern | t_b) * sum_{masked} nll.
    """
    length = x0.shape[0]
    exact = _exact_two_stream(target, process, block_size)
    out = []
    for b in range(length // block_size):
        t = t_of_block[b]
        total = 0.0
        for pattern in itertools.product([False, True], repeat=block_size):
            n = sum(pattern)
            if n == 0:
                continue
            mask = np.zeros(length, bool)
            mask[b * block_size : (b + 1) * block_size] = pattern
            x_t = np.where(mask, process.mask_id, x0)
            tokens = jnp.asarray(np.concatenate([x_t, x0])[None], jnp.int32)
            times = jnp.full((1, length // block_size), t)
            log_p = jax.nn.log_softmax(exact(tokens, times)[0], axis=-1)
            nll = -np.asarray(log_p)[np.arange(length), x0][mask].sum()
            total += t**n * (1 - t) ** (block_size - n) * nll / t
        out.append(total)
    return np.array(out)


@pytest.mark.parametrize(("length", "block_size"), [(4, 1), (4, 2), (4, 4), (6, 2), (6, 3)])
def test_exact_block_nelbo_is_tight(length, block_size):
    """Sum over blocks of the t-integral (Gauss-Legendre, exact for these polynomials) = NLL."""
    target, process = _target(length), dd.Masked(V)
    nodes, weights = np.polynomial.legendre.leggauss(8)
    nodes, weights = 0.5 * (nodes + 1.0), 0.5 * weights
    for x0 in np.asarray(target.sample(jax.random.key(7), 3)):
        num_blocks = length // block_size
        per_t = [
            _exact_expectation(target, process, block_size, x0, [t] * num_blocks) for t in nodes
        ]
        nelbo = float(np.sum(weights[:, None] * np.array(per_t)))
        np.testing.assert_allclose(nelbo, target.nll(x0[None])[0], rtol=2e-5)


def test_loss_matches_the_exact_mask_expectation_at_fixed_times():
    """The estimator's mean over keys at fixed per-block times equals the enumerated expectation."""
    length, block_size, n = 4, 2, 4096
    target, process = _target(length), dd.Masked(V)
    x0 = np.asarray(target.sample(jax.random.key(2), 1))[0]
    times = [0.3, 0.8]
    exact = _exact_expectation(target, process, block_size, x0, times).sum()
    batch = jnp.asarray(np.tile(x0, (n, 1)), jnp.int32)
    t = jnp.tile(jnp.asarray(times)[None], (n, 1))
    model = _exact_two_stream(target, process, block_size)
    values = jax.jit(
        lambda key: dd.block_masked_elbo(key, process, model, batch, t, block_size=block_size)
    )(jax.random.key(0))
    values = np.asarray(values)
    se = values.std() / np.sqrt(n)
    assert abs(values.mean() - exact) < 4 * se, (values.mean(), exact, se)


def test_clipped_times_stay_in_range_and_linear_head_rows():
    length, process = 8, dd.Masked(V)
    x0 = _target(length).sample(jax.random.key(0), 64)
    seen = {}

    def two_stream(tokens, t):
        seen["t"] = t
        return jnp.zeros(tokens.shape + (V,))  # [B, 2L, V]: the first L rows are used

    value = dd.block_masked_elbo(
        jax.random.key(0), process, two_stream, x0, block_size=2, t_min=0.3, t_max=0.8
    )
    assert value.shape == (64,)
    t = np.asarray(seen["t"])
    assert t.shape == (64, 4) and t.min() >= 0.3 and t.max() <= 0.8


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"block_size": 3}, "block_size=3 must divide"),
        ({"block_size": 0}, "block_size"),
        ({"block_size": 2, "t_min": 0.9, "t_max": 0.2}, "t_min < t_max"),
        ({"block_size": 2, "t": jnp.ones((4, 3))}, "t must have shape"),
    ],
)
def test_loss_rejects_bad_arguments(kwargs, match):
    x0 = jnp.zeros((4, 8), jnp.int32)
    model = lambda tokens, t: jnp.zeros(tokens.shape + (V,))
    with pytest.raises(ValueError, match=match):
        dd.block_masked_elbo(jax.random.key(0), dd.Masked(V), model, x0, **kwargs)
    with pytest.raises(TypeError, match="absorbing"):
        dd.block_masked_elbo(jax.random.key(0), dd.Uniform(V), model, x0, block_size=2)


# ---- sampling -----------------------------------------------------------------------------


def _draw(target, process, n, **kwargs):
    fn = jax.jit(
        lambda key: dd.block_sample(
            key, process, _exact_block_model(target, process), (n, target.length), **kwargs
        )
    )
    return fn(jax.random.key(0))


@pytest.mark.parametrize(
    ("block_size", "sampler", "steps"),
    [(1, "ancestral", 1), (2, "first_hitting", 1), (4, "first_hitting", 1), (2, "ancestral", 64)],
)
def test_block_sampling_reproduces_the_target(block_size, sampler, steps):
    target, process, n = _target(4), dd.Masked(V), 20000
    tokens, info = _draw(
        target, process, n, block_size=block_size, steps_per_block=steps, sampler=sampler
    )
    noise_mean, noise_std = target.sampling_noise(n)["tv"]
    tv = target.total_variation(np.asarray(tokens))
    assert tv < noise_mean + 4 * noise_std + (0.01 if sampler == "ancestral" and steps > 1 else 0)
    assert int(info["num_blocks"]) == 4 // block_size
    np.testing.assert_array_equal(np.asarray(info["lengths"]), 4)


def test_prompts_are_kept_and_the_conditional_law_is_reproduced():
    target, process, n = _target(4, seed=3), dd.Masked(V), 20000
    prompt = np.array([2, 1, 0, 0])
    fixed_mask = jnp.asarray(np.tile([True, True, False, False], (n, 1)))
    fixed = jnp.asarray(np.tile(prompt, (n, 1)), jnp.int32)
    tokens, info = _draw(
        target,
        process,
        n,
        block_size=2,
        steps_per_block=1,
        sampler="first_hitting",
        fixed_tokens=fixed,
        fixed_mask=fixed_mask,
    )
    tokens = np.asarray(tokens)
    np.testing.assert_array_equal(tokens[:, :2], np.tile(prompt[:2], (n, 1)))
    # The first block is prefilled: first_hitting makes 2 calls in block 1 only (K = 2).
    assert int(info["nfe"]) == 2
    seqs = target.sequences
    keep = (seqs[:, 0] == 2) & (seqs[:, 1] == 1)
    cond = np.where(keep, target.probs, 0.0) / target.probs[keep].sum()
    counts = np.bincount(target.index(tokens), minlength=target.num_sequences) / n
    tv = 0.5 * np.abs(counts - cond).sum()
    rng = np.random.default_rng(0)
    noise = [0.5 * np.abs(rng.multinomial(n, cond) / n - cond).sum() for _ in range(20)]
    assert tv < np.mean(noise) + 4 * np.std(noise)


def test_generation_stops_at_the_first_eos():
    target, process, n, eos = _target(6, seed=1), dd.Masked(V), 4000, 0
    tokens, info = _draw(
        target, process, n, block_size=2, steps_per_block=1, sampler="first_hitting", eos_id=eos
    )
    tokens, lengths = np.asarray(tokens), np.asarray(info["lengths"])
    # Reference: the same draws without EOS handling, cut by hand.
    raw, raw_info = _draw(
        target, process, n, block_size=2, steps_per_block=1, sampler="first_hitting"
    )
    raw = np.asarray(raw)
    for row in range(n):
        hits = np.nonzero(raw[row] == eos)[0]
        expected_len = hits[0] + 1 if hits.size else 6
        assert lengths[row] == expected_len
        np.testing.assert_array_equal(tokens[row, :expected_len], raw[row, :expected_len])
        assert np.all(tokens[row, expected_len:] == eos)
    # The law of the first token (the probability that a sequence ends after one token).
    p_first = target.probs.reshape(V, -1).sum(axis=1)[eos]
    assert abs(np.mean(lengths == 1) - p_first) < 4 * np.sqrt(p_first * (1 - p_first) / n)


def test_loop_stops_once_every_sequence_has_ended():
    """A model that always predicts EOS: one block, then the loop stops."""
    process, eos = dd.Masked(V), 3

    def model_fn(tokens, t):
        return jnp.where(jnp.arange(V) == eos, 0.0, -jnp.inf) * jnp.ones(tokens.shape + (V,))

    model = dd.uncached_block_model(model_fn, process.mask_id)
    tokens, info = dd.block_sample(
        jax.random.key(0), process, model, (3, 8), block_size=2, steps_per_block=2, eos_id=eos
    )
    assert int(info["num_blocks"]) == 1
    np.testing.assert_array_equal(np.asarray(info["lengths"]), 1)
    np.testing.assert_array_equal(np.asarray(tokens), eos)


def test_samplers_and_options_inside_blocks():
    target, process = _target(4), dd.Masked(V)
    model = _exact_block_model(target, process)
    for sampler, options in [
        ("confidence", {"confidence": "margin"}),
        ("remdm", {"eta": 0.1}),
        (dd.ancestral(), {}),
    ]:
        tokens, info = dd.block_sample(
            jax.random.key(0),
            process,
            model,
            (8, 4),
            block_size=2,
            steps_per_block=2,
            sampler=sampler,
            **options,
        )
        assert np.all((np.asarray(tokens) >= 0) & (np.asarray(tokens) < V))
        # uncached: every denoising call processes all L = 4 positions, no append cost
        assert int(info["token_evals"]) == 4 * int(info["nfe"])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"block_size": 3, "steps_per_block": 1}, ValueError, "block_size=3"),
        ({"block_size": 2, "steps_per_block": 0}, ValueError, "steps_per_block"),
        ({"block_size": 2, "steps_per_block": 1, "eos_id": V}, ValueError, "eos_id"),
        ({"block_size": 2, "steps_per_block": 1, "etaa": 0.1}, ValueError, "etaa"),
        ({"block_size": 2, "steps_per_block": 1, "sampler": "nope"}, ValueError, "sampler"),
    ],
)
def test_block_sample_rejects_bad_arguments(kwargs, error, match):
    target, process = _target(4), dd.Masked(V)
    with pytest.raises(error, match=match):
        dd.block_sample(
            jax.random.key(0), process, _exact_block_model(target, process), (2, 4), **kwargs
        )


def test_non_finite_outputs_raise_eagerly():
    process = dd.Masked(V)
    model = dd.uncached_block_model(
        lambda tokens, t: jnp.full(tokens.shape + (V,), jnp.nan), process.mask_id
    )
    with pytest.raises(ValueError, match="not finite"):
        dd.block_sample(jax.random.key(0), process, model, (2, 4), block_size=2, steps_per_block=1)


def test_linear_head_output_equals_logits():
    """A `LinearHead` over the two-stream hidden `[B, 2L, D]` gives the logits' bound."""
    from diffax.core import LinearHead

    length, dim, process = 8, 5, dd.Masked(V)
    x0 = _target(length).sample(jax.random.key(0), 16)
    embed = jax.random.normal(jax.random.key(1), (V + 1, dim))
    kernel = jax.random.normal(jax.random.key(2), (dim, 8))  # 4 padding columns
    bias = jax.random.normal(jax.random.key(3), (8,))

    def head_fn(tokens, t):
        return LinearHead(embed[tokens] * (1 + t.mean()), kernel, bias, chunk_size=3)

    def logits_fn(tokens, t):
        return (embed[tokens] * (1 + t.mean())) @ kernel[:, :V] + bias[:V]

    key = jax.random.key(4)
    got = dd.block_masked_elbo(key, process, head_fn, x0, block_size=2)
    expected = dd.block_masked_elbo(key, process, logits_fn, x0, block_size=2)
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-5)
