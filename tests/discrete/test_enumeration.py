"""The enumeration oracle itself: a proper distribution, exact samples, consistent posteriors."""

import discrete_support as sup
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffax.discrete as dd

TGT = sup.target()


def test_table_and_exact_samples():
    assert TGT.num_sequences == 27 and TGT.probs.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(TGT.nll(TGT.sequences), -np.log(TGT.probs))
    assert TGT.entropy() == pytest.approx(TGT.probs @ TGT.nll(TGT.sequences))
    x = np.asarray(TGT.sample(jax.random.key(0), 20000))
    noise = TGT.sampling_noise(20000)
    assert TGT.total_variation(x) < noise["tv"][0] + 5 * noise["tv"][1]
    assert TGT.kl_divergence(x) < noise["kl"][0] + 5 * noise["kl"][1]
    with_mask = np.concatenate([x[:10], np.full((10, 3), 3)])
    assert TGT.empirical(with_mask)[1] == 0.5 and TGT.kl_divergence(with_mask) == np.inf


@pytest.mark.parametrize("name", ["masked", "uniform", "general"])
def test_denoiser_sums_to_one_and_matches_bayes(name):
    process = sup.processes()[name]
    x = jnp.array([[0, 1, 2], [2, 2, 0]], jnp.int32)
    if name == "masked":
        x = x.at[:, 1].set(process.mask_id)
    t = jnp.array([0.3, 0.8])
    probs = np.asarray(TGT.denoiser_probs(process, x, t))
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    # Bayes by hand for position 0 of the first row.
    q = np.asarray(process.marginal_matrix(t), np.float64)[0]
    lik = np.prod(q[TGT.sequences, np.asarray(x[0])], axis=1) * TGT.probs
    by_hand = np.array([lik[TGT.sequences[:, 0] == v].sum() for v in range(3)]) / lik.sum()
    np.testing.assert_allclose(probs[0, 0], by_hand, atol=1e-5)
    # log p_t(x_t) is a normalised law over all S^L noisy states.
    states = jnp.asarray(sup.all_states(process.num_states, 3))
    log_marginal = TGT.log_marginal(process, states, jnp.full(len(states), 0.4))
    assert float(jax.nn.logsumexp(log_marginal)) == pytest.approx(0.0, abs=1e-5)


def test_bad_table():
    with pytest.raises(ValueError, match="V\\^L"):
        dd.EnumeratedTarget(np.ones(5) / 5, 2, 2)
    with pytest.raises(ValueError, match="sum to 1"):
        dd.EnumeratedTarget(np.ones(4), 2, 2)
