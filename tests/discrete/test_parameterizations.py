"""Denoiser <-> concrete score conversions, reverse rates and one-step posteriors, against
brute-force enumeration over the whole sequence space."""

import discrete_support as sup
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffax.discrete as dd

TGT = sup.target()
NAMES = ["masked", "uniform", "general"]


def noisy_states(process, num=12, seed=0):
    """Random x_t `[num, L]` over all S states (masks included for Masked) and times `[num]`.

    For `General`, t <= 0.6: inverting P(0 -> t) (score -> denoiser, Tweedie) amplifies float32
    rounding by cond(P(0 -> t)), which passes 1e7 near t = 1 for this generator.
    """
    rng = np.random.default_rng(seed)
    x = rng.integers(0, process.num_states, size=(num, sup.L)).astype(np.int32)
    high = 0.6 if isinstance(process, dd.General) else 0.95
    t = rng.uniform(0.05, high, size=num).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(t)


def relevant(process, x):
    """`[B, L, V]` mask of entries (x_t^l, y) where the concrete score matters: Q_base[y, x] > 0."""
    q = process.base_rate_matrix()[: process.vocab_size]  # rows y (clean), columns x
    return np.asarray(q[:, np.asarray(x)] > 0).transpose(1, 2, 0)


log_marginal = jax.jit(TGT.log_marginal, static_argnums=0)


def brute_force_log_ratios(process, x, t):
    """log p_t(x with x^l <- y) - log p_t(x) from the enumerated marginal."""
    base = np.asarray(log_marginal(process, x, t))
    out = np.zeros(x.shape + (process.vocab_size,))
    for pos in range(x.shape[1]):
        for y in range(process.vocab_size):
            z = x.at[:, pos].set(y)
            out[:, pos, y] = np.asarray(log_marginal(process, z, t)) - base
    return out


@pytest.mark.parametrize("name", NAMES)
def test_exact_score_and_conversions(name):
    process = sup.processes()[name]
    x, t = noisy_states(process)
    keep = relevant(process, x)
    truth = brute_force_log_ratios(process, x, t)
    exact_score = np.asarray(TGT.concrete_score(process)(x, t))
    np.testing.assert_allclose(exact_score[keep], truth[keep], atol=2e-4)
    denoiser = TGT.denoiser(process)(x, t)
    converted = np.asarray(dd.denoiser_to_score(process, denoiser, x, t))
    np.testing.assert_allclose(converted[keep], truth[keep], atol=2e-4)
    back = np.asarray(dd.score_to_denoiser(process, jnp.asarray(exact_score), x, t))
    rows = keep.any(-1)  # positions with any move (masked positions for Masked)
    probs = np.asarray(jax.nn.softmax(denoiser, -1))
    np.testing.assert_allclose(np.exp(back)[rows], probs[rows], atol=2e-4)


@pytest.mark.parametrize("name", NAMES)
def test_round_trip_on_arbitrary_logits(name):
    process = sup.processes()[name]
    x, t = noisy_states(process, seed=1)
    logits = jax.random.normal(jax.random.key(0), x.shape + (process.vocab_size,))
    score = dd.denoiser_to_score(process, logits, x, t)
    back = dd.score_to_denoiser(process, score, x, t)
    rows = relevant(process, x).any(-1)
    np.testing.assert_allclose(
        np.exp(back)[rows], np.asarray(jax.nn.softmax(logits, -1))[rows], atol=1e-4
    )


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("prediction", ["denoiser", "concrete_score"])
def test_reverse_rates_match_definition(name, prediction):
    """rate(x -> y) = Q(t)[y, x] p_t(y) / p_t(x) (Campbell et al. 2022, Prop. 1)."""
    process = sup.processes()[name]
    x, t = noisy_states(process, seed=2)
    model = TGT.denoiser(process) if prediction == "denoiser" else TGT.concrete_score(process)
    scale, log_rel = dd.reverse_rates(process, model(x, t), x, t, prediction)
    rates = np.asarray(scale)[:, None, None] * np.exp(np.asarray(log_rel, np.float64))
    q = np.asarray(process.generator(t), np.float64)  # [B, S, S]
    ratio = np.exp(brute_force_log_ratios(process, x, t))
    expected = np.zeros_like(rates)
    for b in range(x.shape[0]):
        for pos in range(x.shape[1]):
            xl = int(x[b, pos])
            for y in range(process.vocab_size):
                if y != xl:
                    expected[b, pos, y] = q[b, y, xl] * ratio[b, pos, y]
    np.testing.assert_allclose(rates, expected, rtol=2e-3, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_posterior_and_tweedie_steps_are_exact_per_token(name):
    """p(x_s^l = y | x_t) by enumeration = posterior step (denoiser) = Tweedie step (score)."""
    process = sup.processes()[name]
    x, t = noisy_states(process, num=6, seed=3)
    s = t * 0.6
    p0t = np.asarray(process.marginal_matrix(t), np.float64)
    p0s = np.asarray(process.marginal_matrix(s), np.float64)
    pst = np.asarray(process.transition_matrix(s, t), np.float64)
    seqs, probs = TGT.sequences, TGT.probs
    expected = np.zeros(x.shape + (process.num_states,))
    for b in range(x.shape[0]):
        xb = np.asarray(x[b])
        lik = np.prod(p0t[b][seqs, xb], axis=1)  # q(x_t | x_0) for every x_0
        for pos in range(x.shape[1]):
            others = lik / np.maximum(p0t[b][seqs[:, pos], xb[pos]], 1e-300)
            joint = probs[:, None] * others[:, None] * p0s[b][seqs[:, pos]] * pst[b][:, xb[pos]]
            expected[b, pos] = joint.sum(0) / joint.sum()
    post = jax.nn.softmax(process.posterior_logits(x, s, t, TGT.denoiser(process)(x, t)), -1)
    np.testing.assert_allclose(post, expected, atol=2e-5)
    tweedie = process.tweedie_logits(x, s, t, TGT.concrete_score(process)(x, t))
    np.testing.assert_allclose(jax.nn.softmax(tweedie, -1), expected, atol=2e-4)


def test_time_free_and_prediction_names():
    calls = []
    model = dd.time_free(lambda tokens: calls.append(tokens.shape) or jnp.zeros((1, 2, 3)))
    model(jnp.zeros((1, 2), jnp.int32), jnp.array([0.3]))
    assert calls == [(1, 2)]
    assert dd.PREDICTIONS == ("denoiser", "concrete_score")
    with pytest.raises(ValueError, match="allowed values: 'denoiser', 'concrete_score'"):
        dd.reverse_rates(dd.Uniform(3), jnp.zeros((1, 2, 3)), jnp.zeros((1, 2), int), 0.5, "eps")
