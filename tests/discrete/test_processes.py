"""Forward processes: closed forms against expm and against Monte-Carlo simulation of the CTMC."""

import chex
import discrete_support as sup
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

import diffax.discrete as dd

S_T = [(0.0, 0.3), (0.2, 0.7), (0.5, 0.95), (0.0, 1.0), (0.6, 1.0)]


def all_processes():
    procs = {}
    for sched in (dd.LinearSchedule(), dd.GeometricSchedule(1e-3, 5.0)):
        name = type(sched).__name__
        procs[f"masked-{name}"] = dd.Masked(4, sched)
        procs[f"uniform-{name}"] = dd.Uniform(5, sched)
        for kind in ("random", "cyclic", "defective"):
            procs[f"general-{kind}-{name}"] = dd.General(sup.random_generator(4, 3, kind), sched)
    return procs


@pytest.mark.parametrize("name", sorted(all_processes()))
def test_transition_matrix_equals_expm(name):
    process = all_processes()[name]
    q = process.base_rate_matrix()
    np.testing.assert_allclose(q.sum(axis=1), 0.0, atol=1e-12)
    s = jnp.array([a for a, _ in S_T])
    t = jnp.array([b for _, b in S_T])
    p = np.asarray(process.transition_matrix(s, t), np.float64)
    sig = lambda u: float(process.schedule.total_noise(jnp.float32(u)))
    for i, (a, b) in enumerate(S_T):
        delta = min(sig(b) - sig(a), 200.0)  # expm(200 Q) is the stationary limit here
        np.testing.assert_allclose(p[i], scipy.linalg.expm(delta * q), atol=2e-6)
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=3e-6)
    marginal = np.asarray(process.marginal_matrix(t), np.float64)
    for i, b in enumerate(t):
        ref = scipy.linalg.expm(min(sig(float(b)), 200.0) * q)
        np.testing.assert_allclose(marginal[i], ref, atol=2e-6)
    # Chapman-Kolmogorov: P(0 -> s) P(s -> t) = P(0 -> t).
    p0s = process.transition_matrix(jnp.zeros(1), jnp.array([0.3]))
    pst = process.transition_matrix(jnp.array([0.3]), jnp.array([0.8]))
    p0t = process.transition_matrix(jnp.zeros(1), jnp.array([0.8]))
    np.testing.assert_allclose(p0s[0] @ pst[0], p0t[0], atol=3e-6)


def test_complex_and_defective_generators_take_their_paths():
    cyc = dd.General(sup.random_generator(4, 3, "cyclic"))
    assert np.abs(np.linalg.eigvals(cyc.base_rate_matrix()).imag).max() > 0.5
    assert cyc.diagonalisable
    assert not dd.General(sup.random_generator(4, 3, "defective")).diagonalisable


@pytest.mark.parametrize("name", ["masked", "uniform", "general"])
def test_generator_and_forward_rates(name):
    process = sup.processes()[name]
    t = jnp.array([0.25, 0.6])
    gen = np.asarray(process.generator(t))
    beta = np.asarray(process.schedule.rate(t))
    np.testing.assert_allclose(gen, beta[:, None, None] * process.base_rate_matrix(), rtol=1e-6)
    x = jnp.array([[0, 1, 2], [2, 0, 1]])
    rates = np.asarray(process.forward_rates(x, t))
    for b in range(2):
        for pos in range(3):
            row = gen[b, int(x[b, pos])].copy()
            row[int(x[b, pos])] = 0.0
            np.testing.assert_allclose(rates[b, pos], row, rtol=1e-6, atol=1e-7)
    rows = process.transition_probs(x, jnp.zeros(2), t)
    full = process.transition_matrix(jnp.zeros(2), t)
    np.testing.assert_allclose(rows, np.asarray(full)[np.arange(2)[:, None], np.asarray(x)])


@pytest.mark.parametrize("name", ["masked", "uniform", "general", "general-geometric"])
def test_marginals_match_ctmc_simulation(name):
    """Gillespie simulation of the CTMC, sample_marginal and the closed-form rows agree."""
    if name == "general-geometric":
        process = dd.General(sup.random_generator(3, 1), dd.GeometricSchedule(0.2, 3.0))
    else:
        process = sup.processes()[name]
    rng = np.random.default_rng(0)
    n, t = 20000, 0.55
    sigma = float(process.schedule.total_noise(jnp.float32(t)))
    x0 = np.repeat(np.arange(3), n)
    simulated = sup.simulate_ctmc(process.base_rate_matrix(), sigma, x0, rng)
    drawn = np.asarray(
        process.sample_marginal(jax.random.key(0), jnp.asarray(x0.reshape(-1, 1), jnp.int32), t)
    ).reshape(-1)
    rows = np.asarray(process.marginal_probs(jnp.arange(3)[:, None], jnp.full(3, t)))[:, 0]
    for start in range(3):
        expected = rows[start]
        sd = np.sqrt(expected * (1 - expected) / n)
        for sample in (simulated, drawn):
            freq = np.bincount(sample[x0 == start], minlength=process.num_states) / n
            assert np.all(np.abs(freq - expected) < 5 * sd + 1e-4), (start, freq, expected)


def test_priors():
    masked = dd.Masked(4)
    np.testing.assert_array_equal(masked.sample_prior(jax.random.key(0), (2, 3)), 4)
    ll = dd.Masked(4, dd.LogLinearSchedule(0.25))
    x = np.asarray(ll.sample_prior(jax.random.key(0), (4000, 5)))
    assert abs((x != 4).mean() - 0.25) < 0.02
    np.testing.assert_allclose(ll.prior_probs(), [1 / 16] * 4 + [0.75], rtol=1e-6)
    uni = dd.Uniform(5)
    np.testing.assert_allclose(uni.transition_matrix(jnp.zeros(1), jnp.ones(1))[0], 0.2)
    gen = dd.General(sup.random_generator(4, 3, "cyclic"))
    pi = np.asarray(gen.prior_probs(), np.float64)
    np.testing.assert_allclose(pi @ gen.base_rate_matrix(), 0.0, atol=1e-6)
    p01 = np.asarray(gen.transition_matrix(jnp.zeros(1), jnp.ones(1)))[0]
    np.testing.assert_allclose(p01, np.broadcast_to(pi, p01.shape), atol=1e-6)
    x = np.asarray(gen.sample_prior(jax.random.key(1), (20000,)))
    np.testing.assert_allclose(np.bincount(x, minlength=4) / 20000, pi, atol=0.015)


@pytest.mark.parametrize(
    "matrix, match",
    [
        ([[-1.0, 1.0], [2.0, -1.0]], "rows must sum to 0"),
        ([[1.0, -1.0], [1.0, -1.0]], "off-diagonal entries must be >= 0"),
        ([[-1.0, 1.0, 0.0]], "square"),
        ([[0.0, 0.0], [0.0, 0.0]], "no nonzero rate"),
        ([[-np.inf, np.inf], [0.0, 0.0]], "finite"),
    ],
)
def test_invalid_generator(matrix, match):
    with pytest.raises(ValueError, match=match) as err:
        dd.General(np.array(matrix))
    assert "rate_matrix" in str(err.value)


def test_bad_tokens_and_times():
    masked, uniform = dd.Masked(3), dd.Uniform(3)
    with pytest.raises(ValueError, match="x0 holds ids in \\[0, 3\\]; allowed ids are 0..2"):
        masked.sample_marginal(jax.random.key(0), jnp.array([[0, 3]]), 0.5)  # 3 = the mask id
    with pytest.raises(ValueError, match="allowed ids are 0..2"):
        uniform.sample_marginal(jax.random.key(0), jnp.array([[0, 7]]), 0.5)
    with pytest.raises(TypeError, match="integer"):
        uniform.sample_marginal(jax.random.key(0), jnp.array([[0.0, 1.0]]), 0.5)
    with pytest.raises(ValueError, match="t must lie in"):
        uniform.sample_marginal(jax.random.key(0), jnp.array([[0, 1]]), 1.5)
    with pytest.raises(ValueError, match="vocab_size"):
        dd.Uniform(1)


def test_processes_are_static_pytrees():
    general = dd.General(sup.random_generator(3, 1))
    assert general == dd.General(sup.random_generator(3, 1)) and hash(general)
    assert jax.tree_util.tree_leaves(general) == []
    fn = jax.jit(lambda p, x: p.sample_marginal(jax.random.key(0), x, 0.5))
    for process in (dd.Masked(3), dd.Uniform(3), general):
        assert fn(process, jnp.zeros((2, 3), jnp.int32)).shape == (2, 3)
    assert dd.Masked(3).num_input_ids == 4 and dd.Uniform(3).num_input_ids == 3
    assert general.num_input_ids == 3 and general.vocab_size == 3
    assert dd.processes.names() == ["general", "masked", "uniform"]
    assert dd.PROCESSES is dd.processes


def test_processes_refuse_non_schedules():
    for cls in (dd.Masked, dd.Uniform):
        with pytest.raises(TypeError, match="schedule"):
            cls(3, "linear")
    with pytest.raises(TypeError, match="schedule"):
        dd.General(sup.random_generator(3, 1), schedule=0.5)
    with pytest.raises((TypeError, ValueError), match="vocab_size"):
        dd.Masked(0)


def test_general_spectral_gap_and_ergodicity():
    """The gap is the slowest decay rate; a chain with two absorbing states is not ergodic."""
    q = sup.random_generator(3, 1)
    general = dd.General(q)
    lam = np.sort(np.linalg.eigvals(q).real)
    assert general.spectral_gap == pytest.approx(-lam[1], rel=1e-6)
    assert general.ergodic
    two_sinks = np.array([[-1.0, 0.5, 0.5], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    assert not dd.General(two_sinks).ergodic
    # Q = c [[-1, 1], [1, -1]] has eigenvalues 0 and -2c.
    slow = dd.General(0.2 * np.array([[-1.0, 1.0], [1.0, -1.0]]))
    assert slow.spectral_gap == pytest.approx(0.4) and slow.ergodic
    # At alpha(1) = 0 the reverse-rate ELBO integrand vanishes only when every row of P(0 -> t)
    # converges to one law faster than beta(t) grows (gap > 1/2); otherwise t = 1 is refused.
    for process in (dd.General(two_sinks), slow):
        s = process.num_states
        model = lambda xt, t, s=s: jnp.zeros(xt.shape + (s,))
        x0 = jnp.zeros((2, 3), jnp.int32)
        with pytest.raises(ValueError, match="t must lie in"):
            dd.ctmc_elbo(jax.random.key(0), process, model, x0, t=jnp.ones(2))
        assert np.all(np.isfinite(dd.ctmc_elbo(jax.random.key(0), process, model, x0, t=0.5)))


def test_protocol_members_on_every_process():
    """The members losses and samplers read instead of testing the class: absorbing state,
    prediction support, the alpha = 0 rate limit and the prior KL (closed forms vs generic)."""
    two_sinks = np.array([[-1.0, 0.5, 0.5], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    cases = [
        (dd.Masked(3), 3, False),
        (dd.Uniform(3), None, True),
        (dd.General(sup.random_generator(3, 1)), None, True),
        (dd.General(two_sinks), None, False),
        (dd.General(0.2 * np.array([[-1.0, 1.0], [1.0, -1.0]])), None, False),
    ]
    x0 = jnp.array([[0, 1], [1, 0]], jnp.int32)
    for process, mask_id, converge in cases:
        assert process.mask_id == mask_id
        assert process.rates_converge_at_alpha0 is converge
        process.check_prediction("denoiser")
        with pytest.raises(ValueError, match="prediction"):
            process.check_prediction("x0")
        for fn in (lambda f: f, jax.jit):
            kl = fn(process.prior_kl)(x0)
            chex.assert_shape(kl, (2,))
            np.testing.assert_allclose(kl, dd.prior_kl_from_marginal(process, x0), atol=1e-6)
    with pytest.raises(ValueError, match=r"alpha\(1\) > 0"):
        dd.Masked(3).check_prediction("concrete_score")
    dd.Masked(3, dd.LogLinearSchedule(1e-3)).check_prediction("concrete_score")
    for sched in (dd.LogLinearSchedule(0.2), dd.GeometricSchedule(0.1, 1.0)):
        for process in (dd.Masked(3, sched), dd.Uniform(3, sched)):
            closed = jax.jit(process.prior_kl)(x0)
            generic = dd.prior_kl_from_marginal(process, x0)
            assert np.all(np.asarray(generic) > 1e-3)
            np.testing.assert_allclose(closed, generic, rtol=1e-4)
