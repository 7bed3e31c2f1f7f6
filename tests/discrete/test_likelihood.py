"""elbo(): every process and both predictions, stratified over t; bits per token."""

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
