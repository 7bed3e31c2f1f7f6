"""elbo(): every process and both predictions, stratified over t; bits per token."""

import chex
import discrete_support as sup
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffax.discrete as dd

TGT = sup.target()
X0 = jnp.asarray(TGT.sequences[[5, 26]], jnp.int32)


@pytest.mark.parametrize(
    "name, prediction",
    [
        ("masked", "denoiser"),
        ("masked-loglinear", "concrete_score"),
        ("uniform", "denoiser"),
        ("uniform", "concrete_score"),
        ("general", "denoiser"),
    ],
)
def test_elbo_estimates_the_exact_bound(name, prediction):
    """With the exact model the bound is tight, so the Monte-Carlo ELBO estimates the NLL
    (up to the prior term of the log-linear schedule)."""
    if name == "masked-loglinear":
        process = dd.Masked(sup.V, dd.LogLinearSchedule(1e-4))
    else:
        process = sup.processes()[name]
    model = TGT.denoiser(process) if prediction == "denoiser" else TGT.concrete_score(process)
    n = 2048
    batch = jnp.repeat(X0, n, axis=0)
    fn = jax.jit(
        lambda key: dd.elbo(key, process, model, batch, prediction=prediction, num_samples=4)
    )
    nats = np.asarray(fn(jax.random.key(0)), np.float64).reshape(len(X0), n)
    mean, stderr = nats.mean(1), nats.std(1) / np.sqrt(n)
    # -ELBO - NLL lies in [0, prior KL] for exact reverse rates (3 * 1e-4 * log 3 here).
    expected = TGT.nll(np.asarray(X0))
    assert np.all(np.abs(mean - expected) < 4 * stderr + 4e-4), (mean, expected, stderr)
    bits = dd.bits_per_token(jnp.asarray(mean), sup.L)
    np.testing.assert_allclose(bits, mean / (sup.L * np.log(2)), rtol=1e-6)


def test_elbo_arguments():
    process = dd.Masked(3)
    model = TGT.denoiser(process)
    with pytest.raises(ValueError, match="prediction"):
        dd.elbo(jax.random.key(0), process, model, X0, prediction="x0")
    with pytest.raises(ValueError, match="num_samples"):
        dd.elbo(jax.random.key(0), process, model, X0, num_samples=0)


ELBO_TERM_CASES = {
    "masked-loglinear": (dd.Masked(sup.V, dd.LogLinearSchedule(0.1)), "denoiser"),
    "uniform-geometric": (dd.Uniform(sup.V, dd.GeometricSchedule(0.05, 1.0)), "denoiser"),
    "general-geometric": (
        dd.General(sup.random_generator(sup.V, seed=1), dd.GeometricSchedule(0.05, 0.5)),
        "denoiser",
    ),
}
EAGER, JIT = (lambda f: f), jax.jit


@pytest.mark.parametrize(
    "name, transform",
    [("masked-loglinear", EAGER), ("masked-loglinear", JIT)]
    + [("uniform-geometric", JIT), ("general-geometric", JIT)],
    ids=["masked-eager", "masked-jit", "uniform-jit", "general-jit"],
)
def test_elbo_terms_sum_to_elbo_and_prior_is_closed_form(name, transform):
    """`elbo_terms` splits `elbo` (same key, same value) into typed `[B]` terms; the prior term
    is KL(q_1(. | x_0) || prior) in closed form, per token for these alpha(1) > 0 schedules."""
    process, prediction = ELBO_TERM_CASES[name]
    model = TGT.denoiser(process) if prediction == "denoiser" else TGT.concrete_score(process)
    kw = dict(prediction=prediction, num_samples=1)
    terms = transform(lambda k: dd.elbo_terms(k, process, model, X0, **kw))(jax.random.key(1))
    total = transform(lambda k: dd.elbo(k, process, model, X0, **kw))(jax.random.key(1))
    assert isinstance(terms, dd.ELBOTerms)
    chex.assert_shape(list(terms), (len(X0),))
    chex.assert_trees_all_close(terms.prior + terms.reconstruction + terms.diffusion, total)
    chex.assert_trees_all_close(terms.total, total)
    q = np.asarray(process.marginal_probs(X0, jnp.ones(len(X0))), np.float64)
    prior = np.asarray(process.prior_probs(), np.float64)
    closed = np.where(q > 0, q * np.log(np.where(q > 0, q, 1.0) / prior), 0.0).sum(axis=(1, 2))
    assert np.all(closed > 0.01)
    np.testing.assert_allclose(terms.prior, closed, rtol=1e-4)
    if process.schedule.alpha_at(0.0) == 1.0:
        np.testing.assert_array_equal(terms.reconstruction, 0.0)
    assert np.all(np.asarray(terms.diffusion) >= 0.0)
