"""Threshold (parallel) confidence decoding and the ReMDM "conf" / "loop" strategies.

Exact answers: the law of the confidence sampler with the exact denoiser, by enumeration of its
draws (`exact_confidence_law`); the target itself; the masking level 1 - alpha(t) that ReMDM
keeps at every grid time; `ancestral`'s tokens for eta = 0.
"""

import functools
import itertools

import discrete_support as sup
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffax.discrete as dd

V6, L6 = 4, 6
TGT6 = dd.EnumeratedTarget.markov_chain(0, V6, L6)  # 4096 sequences (the target)
MASKED = dd.Masked(V6)
MODEL6 = TGT6.denoiser(MASKED)
TGT = sup.target()  # V = 3, L = 3: 27 sequences, a tight TV test
N = 8000


def exact_confidence_law(tgt, block, steps_per_block, threshold=None, kind="prob"):
    """The law `[V^L]` of `confidence(kind, block_length=block, threshold)` with the exact
    denoiser and `steps_per_block` steps per block, by enumerating every step's draws.

    Each step draws every candidate (masked, in the block) from its exact marginal
    p(x^l | visible tokens), ranks by the confidence (stable: ties by position), reveals the top
    k = n_now - round(K (1 - (j + 1) / steps)) (linear schedule) and, with a threshold, every
    candidate whose confidence exceeds it. Computed in float64 from the probability table.
    """
    vocab, length = tgt.vocab_size, tgt.length
    seqs, probs, mask = tgt.sequences, tgt.probs, tgt.vocab_size
    memo = {}

    def marginals(x):
        if x not in memo:
            xa = np.array(x)
            vis = xa != mask
            w = probs * np.all(seqs[:, vis] == xa[vis], axis=1)
            w = w / w.sum()
            memo[x] = np.stack(
                [np.bincount(seqs[:, pos], weights=w, minlength=vocab) for pos in range(length)]
            )
        return memo[x]

    dist = {(mask,) * length: 1.0}
    for b in range(length // block):
        positions = range(b * block, (b + 1) * block)
        for j in range(steps_per_block):
            keep = int(np.round(np.float32(block) * np.float32(1.0 - (j + 1) / steps_per_block)))
            new = {}
            for x, px in dist.items():
                cand = [pos for pos in positions if x[pos] == mask]
                k = max(len(cand) - keep, 0)
                m = marginals(x)
                top = np.sort(m, axis=1)
                margin = (top[:, -1] - top[:, -2]).astype(np.float32)
                for draw in itertools.product(range(vocab), repeat=len(cand)):
                    p = px * np.prod([m[pos, v] for pos, v in zip(cand, draw, strict=True)])
                    if p == 0:
                        continue
                    if kind == "prob":
                        score = np.array(
                            [m[pos, v] for pos, v in zip(cand, draw, strict=True)], np.float32
                        )
                    else:
                        score = margin[cand]
                    chosen = np.zeros(len(cand), bool)
                    chosen[np.argsort(-score, kind="stable")[:k]] = True
                    if threshold is not None:
                        chosen |= score > threshold
                    y = list(x)
                    for c, pos, v in zip(chosen, cand, draw, strict=True):
                        if c:
                            y[pos] = v
                    new[tuple(y)] = new.get(tuple(y), 0.0) + p
            dist = new
    law = np.zeros(vocab**length)
    for x, p in dist.items():
        law[np.ravel_multi_index(x, (vocab,) * length)] += p
    return law


def law_tv(tgt, samples, law):
    """TV between the empirical law of `[n, L]` samples and `law` `[V^L]`."""
    emp = np.bincount(tgt.index(np.asarray(samples)), minlength=law.size) / len(samples)
    return 0.5 * np.abs(emp - law).sum()


def law_noise(law, n, sigmas=5.0, repeats=20):
    """TV that `n` exact draws from `law` stay below (mean + `sigmas` std)."""
    rng = np.random.default_rng(0)
    tvs = [
        0.5
        * np.abs(np.bincount(rng.choice(law.size, n, p=law), minlength=law.size) / n - law).sum()
        for _ in range(repeats)
    ]
    return np.mean(tvs) + sigmas * np.std(tvs)


def per_sequence(sampler_fn, n, *args, seed=0):
    """Runs `sampler_fn(key, *args) -> (tokens [1, L], info)` for n keys under vmap (`args`
    traced, shared by all): tokens `[n, L]` and the mean network calls per sequence, as with
    batch 1 (a step skips the network per sequence)."""
    keys = jax.random.split(jax.random.key(seed), n)
    x, info = jax.jit(jax.vmap(sampler_fn, in_axes=(0,) + (None,) * len(args)))(keys, *args)
    return np.asarray(x)[:, 0], float(np.mean(info["nfe"]))


# -- confidence with a threshold ------------------------------------------------------------


@pytest.mark.parametrize(
    "num_steps, block_length, kind",
    [(6, None, "prob"), (3, None, "prob"), (6, 2, "prob"), (4, 3, "margin"), (2, 3, "prob")],
)
def test_threshold_one_gives_the_tokens_of_plain_confidence(num_steps, block_length, kind):
    def run(threshold):
        step = dd.confidence(kind, block_length=block_length, threshold=threshold)
        return dd.sample(
            jax.random.key(3), MASKED, MODEL6, (256, L6), sampler=step, num_steps=num_steps
        )

    plain, info_plain = jax.jit(lambda: run(None))()
    thresholded, info = jax.jit(lambda: run(1.0))()
    np.testing.assert_array_equal(np.asarray(plain), np.asarray(thresholded))
    assert int(info["nfe"]) == int(info_plain["nfe"]) <= num_steps


def test_threshold_reveals_confident_tokens_early_and_matches_its_exact_law():
    """threshold = 0.9 (traced) with the exact denoiser of a peaked chain: the law equals the
    enumerated one, and a sequence needs fewer network calls than the 6 of plain decoding
    (one token per step)."""
    tgt = dd.EnumeratedTarget.markov_chain(1, V6, L6, concentration=0.1)
    model = tgt.denoiser(MASKED)
    n, block, spb = 2000, 2, 2

    def fn(key, threshold=None):
        step = dd.confidence(block_length=block, threshold=threshold)
        return dd.sample(key, MASKED, model, (1, L6), sampler=step, num_steps=3 * spb)

    x, nfe = per_sequence(fn, n, jnp.float32(0.9))
    law = exact_confidence_law(tgt, block, spb, threshold=0.9)
    assert law_tv(tgt, x, law) < law_noise(law, n)
    _, nfe_plain = per_sequence(fn, 64)
    assert nfe_plain == 6.0
    assert nfe < 5.0, nfe


def test_skipped_steps_do_not_call_the_network():
    """Two tokens, eight steps: the schedule reveals a token on two steps only, so without a
    threshold six steps are skipped; with a threshold that everything passes, one call."""
    process = dd.Masked(sup.V)
    tgt2 = dd.EnumeratedTarget(TGT.probs.reshape(3, 3, 3).sum(-1), sup.V, 2)
    for threshold, expected in [(None, 2), (1e-6, 1)]:
        step = dd.confidence(threshold=threshold)
        x, info = dd.sample(
            jax.random.key(0), process, tgt2.denoiser(process), (16, 2), sampler=step, num_steps=8
        )
        assert int(info["nfe"]) == expected
        assert np.all((np.asarray(x) >= 0) & (np.asarray(x) < sup.V))


def test_threshold_is_checked():
    with pytest.raises(ValueError, match="threshold"):
        dd.confidence(threshold=1.5)
    with pytest.raises(ValueError, match="threshold"):
        dd.confidence(threshold=0.0)


# -- ReMDM strategies -----------------------------------------------------------------------


@functools.cache
def _run(sampler, num_steps, **options):
    fn = jax.jit(
        lambda key: dd.sample(
            key, MASKED, MODEL6, (64, L6), sampler=sampler, num_steps=num_steps, **options
        )[0]
    )
    return np.asarray(fn(jax.random.key(7)))


@pytest.mark.parametrize("strategy", ["cap", "rescale", "conf"])
def test_remdm_at_eta_zero_is_ancestral(strategy):
    for num_steps in (3, 8):
        ancestral = _run("ancestral", num_steps)
        np.testing.assert_array_equal(
            _run("remdm", num_steps, eta=0.0, strategy=strategy), ancestral
        )
    if strategy != "conf":  # with eta > 0 tokens are remasked, so the draws differ
        assert np.any(_run("remdm", 8, eta=0.5, strategy=strategy) != ancestral)


@pytest.mark.parametrize(
    "options",
    [dict(strategy="loop", eta=0.05), dict(strategy="conf", eta=0.3)],
    ids=["loop", "conf"],
)
def test_remdm_keeps_the_target_law_at_many_steps(options):
    """With the exact denoiser at 128 steps the law is the target's within Monte-Carlo error
    ("conf" at eta = 1 is slightly tilted: TV 0.027-0.031 over three keys against an exact-draw
    TV of 0.013 +- 0.003; its remasking choice depends on the token values)."""
    process = dd.Masked(sup.V)
    x, nfe = sup.run_sampler(process, TGT.denoiser(process), "remdm", 128, N, **options)
    assert TGT.total_variation(x) < sup.tv_threshold(TGT, N), TGT.total_variation(x)
    assert nfe == 128


def _mask_fraction(process, n, num_steps, **options):
    fn = jax.jit(
        lambda key: dd.sample(
            key,
            process,
            TGT6.denoiser(process),
            (n, L6),
            sampler="remdm",
            num_steps=num_steps,
            trajectory=True,
            **options,
        )[1]["trajectory"]
    )
    path = np.asarray(fn(jax.random.key(1)))
    return (path == process.mask_id).mean(axis=(1, 2)), path


def test_remdm_loop_holds_alpha_on_and_remasks_only_inside_the_loop():
    """The masking level follows the loop's alpha path (0 -> alpha_on, held, -> 1): exactly in
    expectation (ReMDM keeps the marginals), so within Monte-Carlo error; tokens are remasked
    only while t_off < t <= t_on."""
    process, n, steps = dd.Masked(V6), 2000, 40
    t_on, t_off, alpha_on = 0.55, 0.05, 0.9
    frac, path = _mask_fraction(process, n, steps, strategy="loop", eta=0.1)
    ts = np.asarray(dd.time_grid(steps))  # the float32 grid the sampler compares with t_on
    alpha = np.where(
        ts > t_on,
        (1 - ts) * alpha_on / (1 - t_on),
        np.where(ts > t_off, alpha_on, 1 - ts * (1 - alpha_on) / t_off),
    )
    sd = np.sqrt(alpha * (1 - alpha) / (n * L6)) * 3 + 1e-3  # tokens of a sequence correlate
    assert np.all(np.abs(frac - (1 - alpha)) < 5 * sd), np.c_[frac, 1 - alpha]
    remasked = ((path[:-1] != process.mask_id) & (path[1:] == process.mask_id)).any(axis=(1, 2))
    in_loop = (ts[:-1] > t_off) & (ts[:-1] <= t_on)
    np.testing.assert_array_equal(remasked, in_loop)


def test_remdm_conf_keeps_the_masking_level():
    """ "conf" remasks the least confident tokens and reveals as many masked ones extra in
    expectation: the fraction of masks stays 1 - alpha(t) = t (linear schedule) at every grid
    time, as with `ancestral`."""
    process, n, steps = dd.Masked(V6), 2000, 20
    frac, path = _mask_fraction(process, n, steps, strategy="conf", eta=1.0)
    ts = np.linspace(1.0, 0.0, steps + 1)
    sd = np.sqrt(ts * (1 - ts) / (n * L6)) * 3 + 1e-3
    assert np.all(np.abs(frac - ts) < 5 * sd), np.c_[frac, ts]
    remasked = (path[:-1] != process.mask_id) & (path[1:] == process.mask_id)
    assert remasked.sum() > 0.05 * n


def test_remdm_strategy_options_are_checked():
    with pytest.raises(ValueError, match="'loop'"):
        dd.remdm(strategy="switch")
    with pytest.raises(ValueError, match="t_off must be < t_on"):
        dd.remdm(strategy="loop", t_on=0.1, t_off=0.2)
    with pytest.raises(ValueError, match="alpha_on"):
        dd.remdm(strategy="loop", alpha_on=1.0)
