"""Discrete guidance against exact answers: weight conventions, and sampled laws by enumeration.

Classifier-free guidance: w = 1 / w = 0 are the conditional / unconditional model exactly, w = 2
is checked by hand, and with the exact conditional denoisers of a two-class mixture w = 1
sampling reproduces p(x | y). Classifier guidance: with h_t(x_t) = E[p(y | x_0)^gamma | x_t]
computed by enumeration the guided score equals the exact score of the tilted target
p(x) p(y | x)^gamma / Z, and guided sampling reproduces that target within Monte-Carlo error.
"""

import discrete_support as sup
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffax.discrete as dd
from diffax.discrete.guidance import (
    classifier_free_guidance,
    classifier_guidance,
    one_token_neighbours,
)

V, L = sup.V, sup.L
N = 8000
TGT0 = dd.EnumeratedTarget.markov_chain(0, V, L, concentration=0.5)
TGT1 = dd.EnumeratedTarget.markov_chain(1, V, L, concentration=0.5)
MIXTURE = dd.EnumeratedTarget(0.5 * (TGT0.probs + TGT1.probs), V, L)
MASKED_LL = dd.Masked(V, dd.LogLinearSchedule(1e-3))  # concrete scores need alpha(1) > 0
NULL = 2  # the "no label" condition


def conditional_model(process):
    """Exact denoisers of the two classes and of the mixture: `(x, t, label) -> logits`."""
    fns = [TGT0.denoiser(process), TGT1.denoiser(process), MIXTURE.denoiser(process)]

    def model_fn(x, t, label):
        outs = jnp.stack([f(x, t) for f in fns])  # [3, B, L, V]
        return jnp.take_along_axis(outs, label[None, :, None, None], axis=0)[0]

    return model_fn


def random_cond_model(prediction_scale=1.0):
    """A fixed random `(x, t, label) -> [B, L, V]` output depending on the label and x."""
    table = jax.random.normal(jax.random.key(3), (3, V + 1, V)) * prediction_scale

    def model_fn(x, t, label):
        del t
        return table[label[:, None], x]  # [B, L, V]

    return model_fn


def log_softmax(a):
    a = np.asarray(a, np.float64)
    m = a.max(-1, keepdims=True)
    return a - m - np.log(np.exp(a - m).sum(-1, keepdims=True))


X = jnp.array([[0, 3, 1], [3, 3, 2], [1, 2, 0], [3, 0, 3]], jnp.int32)
T = jnp.array([0.2, 0.5, 0.7, 0.9], jnp.float32)
LABEL = jnp.array([0, 1, 0, 1], jnp.int32)


# -- classifier-free guidance ----------------------------------------------------------------


def test_cfg_weights_match_the_continuous_convention():
    model = random_cond_model()
    calls = []

    def counted(x, t, c):
        calls.append(x.shape[0])
        return model(x, t, c)

    null = jnp.full_like(LABEL, NULL)
    out_c = np.asarray(model(X, T, LABEL))
    out_u = np.asarray(model(X, T, null))
    for w, expected in [
        (1.0, log_softmax(out_c)),
        (0.0, log_softmax(out_u)),
        (2.0, 2.0 * log_softmax(out_c) - log_softmax(out_u)),
        (-0.5, -0.5 * log_softmax(out_c) + 1.5 * log_softmax(out_u)),
    ]:
        guided = classifier_free_guidance(counted, LABEL, null, w)(X, T)
        np.testing.assert_allclose(np.asarray(guided), expected, atol=2e-6)
    # Exactly the conditional / unconditional log-probabilities at w = 1 / 0 (bit for bit).
    g1 = classifier_free_guidance(model, LABEL, null, 1.0)(X, T)
    np.testing.assert_array_equal(np.asarray(g1), np.asarray(jax.nn.log_softmax(out_c)))
    g0 = classifier_free_guidance(model, LABEL, null, 0.0)(X, T)
    np.testing.assert_array_equal(np.asarray(g0), np.asarray(jax.nn.log_softmax(out_u)))
    assert set(calls) == {2 * X.shape[0]} and len(calls) == 4  # one call per evaluation


def test_cfg_concrete_score_mixes_log_ratios():
    model = random_cond_model()
    null = jnp.full_like(LABEL, NULL)
    out_c, out_u = (np.asarray(model(X, T, c), np.float64) for c in (LABEL, null))
    guided = classifier_free_guidance(model, LABEL, null, 2.0, prediction="concrete_score")
    np.testing.assert_allclose(np.asarray(guided(X, T)), 2 * out_c - out_u, atol=2e-6)
    # Masked: mixing denoisers or scores gives the same guided denoiser (common time factor).
    process = MASKED_LL
    both = [
        classifier_free_guidance(
            model, LABEL, null, 2.0, process=process, prediction="denoiser", combine_in=c
        )(X, T)
        for c in ("denoiser", "concrete_score")
    ]
    masked = np.asarray(X == process.mask_id)
    a, b = (np.asarray(jax.nn.log_softmax(o)) for o in both)
    np.testing.assert_allclose(a[masked], b[masked], atol=2e-5)
    # Uniform: mixing log ratios is r_c^2 / r_u, checked against the process's own conversion.
    uniform = dd.Uniform(V)
    xu = jnp.minimum(X, V - 1)
    out_c, out_u = (np.asarray(model(xu, T, c)) for c in (LABEL, null))
    r_c, r_u = (uniform.denoiser_to_log_ratios(jnp.asarray(o), xu, T) for o in (out_c, out_u))
    g = classifier_free_guidance(
        model, LABEL, null, 2.0, process=uniform, combine_in="concrete_score"
    )(xu, T)
    expected = uniform.log_ratios_to_denoiser(2 * r_c - r_u, xu, T)
    np.testing.assert_allclose(np.asarray(g), np.asarray(expected), atol=2e-5)


def test_cfg_keeps_excluded_classes_excluded():
    neg = -jnp.inf
    out_c = jnp.array([[[0.0, neg, 0.0]]])
    out_u = jnp.array([[[neg, 0.0, 0.0]]])

    def model(x, t, c):
        return jnp.where(c[:, None, None] == 0, out_c, out_u)

    x, t = jnp.zeros((1, 1), jnp.int32), jnp.full((1,), 0.5)
    c, n = jnp.zeros((1,), jnp.int32), jnp.ones((1,), jnp.int32)
    for w in (0.0, 1.0, 2.0):
        g = np.asarray(classifier_free_guidance(model, c, n, w)(x, t))[0, 0]
        assert not np.isnan(g).any() and np.all(g < np.inf)
    g1 = np.asarray(classifier_free_guidance(model, c, n, 1.0)(x, t))[0, 0]
    np.testing.assert_allclose(g1, [np.log(0.5), -np.inf, np.log(0.5)], atol=1e-6)
    g2 = np.asarray(classifier_free_guidance(model, c, n, 2.0)(x, t))[0, 0]
    assert g2[0] == -np.inf and g2[1] == -np.inf and np.isfinite(g2[2])


@pytest.mark.parametrize("w, target", [(1.0, TGT0), (0.0, MIXTURE)])
def test_cfg_sampling_reproduces_the_conditional(w, target):
    # First-hitting with the exact denoiser is exact, so w = 1 must give p(x | y = 0).
    process = dd.Masked(V)
    labels = jnp.zeros((N,), jnp.int32)
    guided = classifier_free_guidance(
        conditional_model(process), labels, jnp.full((N,), NULL, jnp.int32), w
    )
    x, nfe = sup.run_sampler(process, guided, "first_hitting", L, N)
    assert target.total_variation(x) < sup.tv_threshold(target, N), target.total_variation(x)
    assert nfe == L
    if w == 1.0:  # and not the other class or the mixture
        assert MIXTURE.total_variation(x) > 0.1


def test_cfg_uniform_sampling_reproduces_the_conditional():
    process = dd.Uniform(V)
    labels = jnp.ones((N,), jnp.int32)
    guided = classifier_free_guidance(
        conditional_model(process), labels, jnp.full((N,), NULL, jnp.int32), 1.0
    )
    x, _ = sup.run_sampler(process, guided, "euler", 64, N)
    plain, _ = sup.run_sampler(process, TGT1.denoiser(process), "euler", 64, N)
    # The same discretisation error as sampling the class model directly (< 0.05 at 64 steps).
    assert abs(TGT1.total_variation(x) - TGT1.total_variation(plain)) < 0.02
    assert TGT1.total_variation(x) < 0.05


def test_cfg_errors():
    model = random_cond_model()
    null = jnp.full_like(LABEL, NULL)
    with pytest.raises(ValueError, match="process"):
        classifier_free_guidance(model, LABEL, null, 2.0, combine_in="concrete_score")
    with pytest.raises(ValueError, match="combine_in"):
        classifier_free_guidance(model, LABEL, null, 2.0, combine_in="eps")
    with pytest.raises(ValueError, match="prediction"):
        classifier_free_guidance(model, LABEL, null, 2.0, prediction="x0")
    with pytest.raises(ValueError, match="guidance_scale"):
        classifier_free_guidance(model, LABEL, null, float("nan"))
    with pytest.raises(ValueError, match="structure"):
        classifier_free_guidance(model, LABEL, (null, null), 2.0)
    bad = classifier_free_guidance(lambda x, t, c: model(x, t, c)[:1], LABEL, null, 2.0)
    with pytest.raises(ValueError, match="model_fn output"):
        bad(X, T)


# -- classifier guidance ---------------------------------------------------------------------

CLASSIFIER = 0.05 + 0.9 * np.random.default_rng(7).uniform(size=V**L)  # p(y | x_0) per sequence


def tilted_target(base, gamma):
    p = base.probs * CLASSIFIER**gamma
    return dd.EnumeratedTarget(p / p.sum(), V, L)


def exact_log_h(base, process, gamma):
    """log E[p(y | x_0)^gamma | x_t] by enumeration: the exact tilted h_t (test helper)."""
    g = jnp.asarray(CLASSIFIER**gamma, jnp.float32)

    def log_h(x_t, t):
        if process.mask_id is not None:  # independent of t; defined for all states at t = 1/2
            t = jnp.full_like(t, 0.5)
        return jnp.log(base.posterior(process, x_t, t) @ g)

    return log_h


def test_one_token_neighbours_by_brute_force():
    x = jnp.array([[0, 2, 1], [1, 1, 0]], jnp.int32)
    nbrs = np.asarray(one_token_neighbours(x, V))
    for b in range(2):
        for pos in range(L):
            for v in range(V):
                expected = np.asarray(x[b]).copy()
                expected[pos] = v
                np.testing.assert_array_equal(nbrs[b, pos, v], expected)


@pytest.mark.parametrize("name", ["masked", "uniform"])
@pytest.mark.parametrize("gamma", [1.0, 2.0])
def test_guided_score_is_the_exact_tilted_score(name, gamma):
    process = MASKED_LL if name == "masked" else dd.Uniform(V)
    states = sup.all_states(process.num_states, L)
    t = jnp.asarray(np.random.default_rng(0).uniform(0.05, 0.95, len(states)), jnp.float32)
    x = jnp.asarray(states)
    guided = classifier_guidance(
        TGT0.denoiser(process),
        process,
        lambda xt, tt: exact_log_h(TGT0, process, gamma)(xt, tt) / gamma,
        gamma,
    )
    got = np.asarray(guided(x, t))
    expected = np.asarray(tilted_target(TGT0, gamma).concrete_score(process)(x, t))
    if name == "masked":
        where = np.broadcast_to(np.asarray(x == process.mask_id)[..., None], got.shape)
    else:
        where = ~np.asarray(jax.nn.one_hot(x, V, dtype=bool))
    np.testing.assert_allclose(got[where], expected[where], atol=2e-4, rtol=2e-4)


def test_first_order_is_exact_for_a_log_linear_likelihood():
    process = dd.Uniform(V)
    weights = jax.random.normal(jax.random.key(1), (L, V))

    def log_h_tokens(x, t):
        return jnp.sum(weights[jnp.arange(L), x], axis=-1) * (1.0 + t)

    def log_h_one_hot(oh, t):
        return jnp.einsum("blv,lv->b", oh, weights) * (1.0 + t)

    model = TGT0.denoiser(process)
    x, t = jnp.minimum(X, V - 1), T
    exact = classifier_guidance(model, process, log_h_tokens, 1.5)(x, t)
    approx = classifier_guidance(model, process, log_h_one_hot, 1.5, first_order=True)(x, t)
    np.testing.assert_allclose(np.asarray(approx), np.asarray(exact), atol=1e-5)


def test_classifier_guidance_errors():
    process = dd.Masked(V)
    model = TGT0.denoiser(process)
    log_h = exact_log_h(TGT0, process, 1.0)
    with pytest.raises(ValueError, match="alpha"):  # a masked score needs alpha(1) > 0
        classifier_guidance(model, process, log_h)
    with pytest.raises(ValueError, match="output"):
        classifier_guidance(model, dd.Uniform(V), log_h, output="denoiser")
    with pytest.raises(ValueError, match="output"):
        classifier_guidance(model, process, log_h, output="logits")
    with pytest.raises(TypeError, match="first_order"):
        classifier_guidance(model, process, log_h, output="denoiser", first_order=1)
    guided = classifier_guidance(model, process, lambda x, t: jnp.zeros((3,)), output="denoiser")
    with pytest.raises(ValueError, match="log_likelihood_fn output"):
        guided(X, T)


@pytest.mark.parametrize("gamma", [1.0, 2.0])
def test_masked_guided_sampling_is_exact(gamma):
    # First-hitting with the exact (tilted) denoiser is exact: TV at the sampling-noise floor.
    process = dd.Masked(V)
    target = tilted_target(TGT0, gamma)
    guided = classifier_guidance(
        TGT0.denoiser(process),
        process,
        lambda x, t: exact_log_h(TGT0, process, gamma)(x, t) / gamma,
        gamma,
        output="denoiser",
    )
    x, _ = sup.run_sampler(process, guided, "first_hitting", L, N)
    tv = target.total_variation(x)
    print(f"masked gamma={gamma}: TV {tv:.4f}, noise {target.sampling_noise(N)['tv']}")
    assert tv < sup.tv_threshold(target, N), tv
    assert TGT0.total_variation(x) > tv + 0.05  # the guidance moved the samples


@pytest.mark.parametrize("gamma", [1.0, 2.0])
def test_uniform_guided_sampling_reproduces_the_tilted_target(gamma):
    process = dd.Uniform(V)
    target = tilted_target(TGT0, gamma)
    guided = classifier_guidance(
        TGT0.denoiser(process),
        process,
        lambda x, t: exact_log_h(TGT0, process, gamma)(x, t) / gamma,
        gamma,
    )
    steps = 64
    x, nfe = sup.run_sampler(process, guided, "euler", steps, N, prediction="concrete_score")
    tv = target.total_variation(x)
    # Euler's discretisation error at this step count, measured on the tilted target itself.
    plain, _ = sup.run_sampler(process, target.denoiser(process), "euler", steps, N)
    tv_plain = target.total_variation(plain)
    noise = sup.tv_threshold(target, N)
    print(f"uniform gamma={gamma}: TV {tv:.4f} (plain sampler {tv_plain:.4f}, noise {noise:.4f})")
    assert nfe == steps
    assert tv < max(noise, tv_plain) + 0.01, (tv, tv_plain, noise)


@pytest.mark.slow
def test_gamma_on_an_untilted_classifier_is_an_approximation():
    # gamma = 2 on the untilted noisy classifier log E[p(y | x_0) | x_t] (not log E[p^2 | x_t]).
    process, gamma, steps = dd.Uniform(V), 2.0, 64
    target = tilted_target(TGT0, gamma)
    exact = classifier_guidance(
        TGT0.denoiser(process),
        process,
        lambda x, t: exact_log_h(TGT0, process, gamma)(x, t) / gamma,
        gamma,
    )
    approx = classifier_guidance(
        TGT0.denoiser(process), process, exact_log_h(TGT0, process, 1.0), gamma
    )
    x, _ = sup.run_sampler(process, exact, "euler", steps, N, prediction="concrete_score")
    xa, _ = sup.run_sampler(process, approx, "euler", steps, N, prediction="concrete_score")
    tv, tv_approx = target.total_variation(x), target.total_variation(xa)
    print(f"uniform gamma=2: TV exact h {tv:.4f}, untilted classifier {tv_approx:.4f}")
    assert tv_approx > tv
