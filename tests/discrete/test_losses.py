"""Losses against exact answers: the bounds are tight for the exact model and loose otherwise."""

import itertools

import chex
import discrete_support as sup
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffax.discrete as dd
from diffax.discrete.losses import masked_elbo_terms, prior_kl

TGT = sup.target()
X0 = TGT.sequences[[0, 13, 26]]  # an unlikely, a middling and a likely sequence
# Exact-answer tests run eagerly and under jit (bugs have behaved differently in the two).
JIT_OR_NOT = pytest.mark.parametrize("transform", [lambda f: f, jax.jit], ids=["eager", "jit"])


@JIT_OR_NOT
def test_masked_elbo_closed_form_equals_nll(transform):
    """E[-ELBO] = sum_k 1/k avg_{|M| = k} sum_{l in M} -log p(x^l | x^unmasked) = -log p(x)."""
    process = dd.Masked(sup.V)
    model = TGT.denoiser(process)
    x0 = jnp.asarray(TGT.sequences, jnp.int32)  # all 27 sequences at once
    terms = transform(lambda logits, xt, t: masked_elbo_terms(process, logits, x0, xt, t))
    expected = np.zeros(len(x0))
    for k in range(1, sup.L + 1):
        subsets = list(itertools.combinations(range(sup.L), k))
        for subset in subsets:
            xt = x0.at[:, list(subset)].set(process.mask_id)
            t = jnp.ones(len(x0))  # masking_rate(1) = 1 for the linear schedule: plain CE
            logits = model(xt, 0.5 * t)  # the exact masked denoiser is time-free
            ce = terms(logits, xt, t)
            chex.assert_shape(ce, x0.shape)
            ce = ce.sum(-1)
            expected += np.asarray(ce, np.float64) / (k * len(subsets))
    np.testing.assert_allclose(expected, TGT.nll(TGT.sequences), rtol=1e-5)


def test_masked_elbo_monte_carlo_within_stated_error():
    process = dd.Masked(sup.V)
    model = TGT.denoiser(process)
    n = 4096
    estimate = jax.jit(lambda key, batch: dd.masked_elbo(key, process, model, batch))
    for i, x0 in enumerate(X0):
        batch = jnp.broadcast_to(jnp.asarray(x0, jnp.int32), (n, sup.L))
        nats = np.asarray(estimate(jax.random.key(i), batch), np.float64)
        stderr = nats.std() / np.sqrt(n)  # stratified times: conservative (iid formula)
        assert abs(nats.mean() - TGT.nll(x0[None])[0]) < 4 * stderr, (nats.mean(), stderr)


@pytest.mark.parametrize("name", ["uniform", "general"])
@pytest.mark.parametrize("prediction", ["denoiser", "concrete_score"])
def test_expected_ctmc_elbo_is_tight_for_exact_model_and_loose_otherwise(name, prediction):
    """For the exact model the reverse process is the true time reversal, so the continuous-time
    bound is tight (-ELBO = NLL); any other model gives -ELBO > NLL."""
    process = sup.processes()[name]
    model = TGT.denoiser(process) if prediction == "denoiser" else TGT.concrete_score(process)
    bound = sup.expected_bound(process, model, TGT.sequences, prediction)
    np.testing.assert_allclose(bound, TGT.nll(TGT.sequences), rtol=5e-5)
    # A perturbed model is a different distribution p_theta: its bound on -log p_theta(x) can
    # fall below -log p(x) for some x, but the data average is a cross-entropy >= the entropy.
    noise = 0.5 * jax.random.normal(jax.random.key(0), (sup.L, sup.V))
    worse = lambda xt, t: model(xt, t) + noise
    cross_entropy = TGT.probs @ sup.expected_bound(process, worse, TGT.sequences, prediction)
    assert cross_entropy > TGT.entropy() + 0.01


@JIT_OR_NOT
def test_ctmc_elbo_and_score_entropy_equal_masked_elbo_for_masked(transform):
    process = dd.Masked(sup.V, dd.LogLinearSchedule(1e-3))
    x0 = jnp.asarray(TGT.sequences, jnp.int32)
    key = jax.random.key(3)
    logits_model = lambda xt, t: TGT.denoiser(process)(xt, t) + 0.1 * xt[..., None]
    a = transform(lambda k: dd.masked_elbo(k, process, logits_model, x0))(key)
    b = transform(lambda k: dd.ctmc_elbo(k, process, logits_model, x0))(key)
    chex.assert_shape((a, b), (len(x0),))
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    score_model = lambda xt, t: dd.denoiser_to_score(process, logits_model(xt, t), xt, t)
    c = transform(lambda k: dd.score_entropy(k, process, score_model, x0))(key)
    np.testing.assert_allclose(a, c, rtol=1e-4, atol=1e-4)


@JIT_OR_NOT
def test_prior_kl_closed_forms(transform):
    x0 = jnp.asarray(X0, jnp.int32)
    for process in (dd.Masked(3), dd.Uniform(3), dd.General(sup.random_generator(3, 1))):
        kl = transform(lambda x: prior_kl(process, x))(x0)
        chex.assert_shape(kl, (3,))
        np.testing.assert_allclose(kl, 0.0, atol=1e-5)
    for sched in (dd.GeometricSchedule(1e-3, 3.0), dd.LogLinearSchedule(0.1)):
        for process in (dd.Masked(3, sched), dd.Uniform(3, sched)):
            q = process.marginal_probs(x0, jnp.ones(3))
            prior = process.prior_probs()
            generic = jnp.sum(jnp.where(q > 0, q * jnp.log(q / prior), 0.0), axis=(1, 2))
            kl = transform(lambda x: prior_kl(process, x))(x0)
            np.testing.assert_allclose(kl, generic, rtol=1e-4)
            np.testing.assert_allclose(dd.prior_kl_from_marginal(process, x0), generic, rtol=1e-4)


def test_end_terms():
    x0 = jnp.asarray(X0, jnp.int32)
    # Geometric schedule: alpha(0) < 1 and alpha(1) > 0, so reconstruction and prior terms
    # enter. Their exact expectation (reconstruction by enumerating the mask patterns at t = 0)
    # plus the integral matches the Monte-Carlo ELBO, and the bound stays above the entropy.
    process = dd.Masked(3, dd.GeometricSchedule(0.05, 3.0))
    model = TGT.denoiser(process)
    x0 = jnp.asarray(TGT.sequences, jnp.int32)
    a0 = process.schedule.alpha_at(0.0)
    recon = np.zeros(len(x0))
    for pattern in itertools.product([False, True], repeat=sup.L):
        m = np.array(pattern)
        weight = (1 - a0) ** m.sum() * a0 ** (~m).sum()
        xt = jnp.where(m[None], process.mask_id, x0)
        logp = jax.nn.log_softmax(model(xt, jnp.zeros(len(x0))))
        nll = -jnp.take_along_axis(logp, x0[..., None], -1)[..., 0]
        recon += weight * np.asarray(jnp.where(m[None], nll, 0.0).sum(-1))
    exact = sup.expected_bound(process, model, TGT.sequences, "denoiser") + recon
    exact += np.asarray(prior_kl(process, x0))
    assert TGT.probs @ exact > TGT.entropy() + 0.05
    batch = jnp.broadcast_to(x0[13], (4096, sup.L))
    nats = np.asarray(dd.elbo(jax.random.key(0), process, model, batch), np.float64)
    assert abs(nats.mean() - exact[13]) < 4 * nats.std() / 64


def test_flow_matching_ce_and_registry():
    process = dd.Uniform(3)
    x0 = jnp.asarray(X0, jnp.int32)
    model = TGT.denoiser(process)
    t = jnp.full(3, 0.4)
    key = jax.random.key(0)
    value = dd.flow_matching_ce(key, process, model, x0, t=t)
    xt = process.sample_marginal(jax.random.split(key)[1], x0, t)
    manual = -jnp.take_along_axis(jax.nn.log_softmax(model(xt, t)), x0[..., None], -1).sum((1, 2))
    np.testing.assert_allclose(value, manual, rtol=1e-6)
    assert dd.losses.names() == ["ctmc_elbo", "flow_matching_ce", "masked_elbo", "score_entropy"]
    assert dd.LOSSES is dd.losses
    assert dd.loss_fn("score_entropy") is dd.score_entropy
    with pytest.raises(ValueError, match="allowed values: ctmc_elbo, flow_matching_ce"):
        dd.loss_fn("dsm")


GRADIENT_CASES = [
    (loss, name)
    for loss in ("masked_elbo", "ctmc_elbo", "score_entropy", "flow_matching_ce")
    for name in ("masked", "uniform", "general")
    if loss != "masked_elbo" or name == "masked"  # masked_elbo is Masked-only (test_bad_inputs)
]


@pytest.mark.slow  # a sweep: ~60 s on 2 cores
@pytest.mark.parametrize("loss, name", GRADIENT_CASES)
def test_losses_have_finite_gradients(loss, name):
    process = sup.processes()[name]
    if loss == "score_entropy" and name == "masked":
        process = dd.Masked(sup.V, dd.LogLinearSchedule(1e-3))
    table = jnp.zeros((process.num_input_ids, sup.V))

    def mean_loss(table, key):
        model = lambda xt, t: table[xt] * (1.0 + t[:, None, None])
        x0 = TGT.sample(jax.random.key(1), 64)
        return jnp.mean(dd.loss_fn(loss)(key, process, model, x0))

    value_and_grad = jax.jit(jax.value_and_grad(mean_loss))
    for seed in range(3):
        value, grad = value_and_grad(table, jax.random.key(seed))
        assert np.isfinite(value) and np.all(np.isfinite(grad)) and np.any(grad != 0)


def test_bad_inputs():
    x0 = jnp.asarray(X0, jnp.int32)
    model = TGT.denoiser(dd.Uniform(3))
    with pytest.raises(TypeError, match="masked_elbo needs process=Masked"):
        dd.masked_elbo(jax.random.key(0), dd.Uniform(3), model, x0)
    with pytest.raises(ValueError, match="allowed ids are 0..2"):
        dd.ctmc_elbo(jax.random.key(0), dd.Uniform(3), model, x0.at[0, 0].set(3))
    with pytest.raises(ValueError, match="allowed ids are 0..2"):
        dd.masked_elbo(jax.random.key(0), dd.Masked(3), model, x0.at[0, 0].set(3))
    with pytest.raises(ValueError, match="alpha\\(1\\) > 0"):
        dd.score_entropy(jax.random.key(0), dd.Masked(3), model, x0)
    with pytest.raises(ValueError, match="model_fn output has shape"):
        dd.ctmc_elbo(jax.random.key(0), dd.Uniform(4), model, x0)


def test_stratified_times_and_bits():
    t = np.sort(np.asarray(dd.stratified_times(jax.random.key(0), 8)))
    assert t.min() > 0 and t.max() <= 1
    np.testing.assert_allclose(np.diff(t), 1 / 8, atol=1e-6)
    assert float(dd.bits_per_token(jnp.asarray(np.log(2) * 6), 3)) == pytest.approx(2.0)


def test_every_loss_takes_prediction_by_keyword():
    """The training stack calls `loss_fn(name)(key, process, model_fn, x0, prediction=...)`."""
    process = dd.Masked(sup.V, dd.LogLinearSchedule(1e-3))
    x0 = jnp.asarray(X0, jnp.int32)
    for name in dd.losses.names():
        value = dd.loss_fn(name)(
            jax.random.key(0), process, TGT.denoiser(process), x0, prediction="denoiser"
        )
        assert value.shape == (3,) and np.all(np.isfinite(value))
    with pytest.raises(ValueError, match="prediction"):
        dd.masked_elbo(
            jax.random.key(0), process, TGT.denoiser(process), x0, prediction="concrete_score"
        )


# -- endpoints, argument checks --------------------------------------------------------------

SCHEDULES = {
    "linear": dd.LinearSchedule(),
    "cosine": dd.CosineSchedule(),
    "loglinear": dd.LogLinearSchedule(1e-3),
    "geometric": dd.GeometricSchedule(1e-3, 5.0),
    "polynomial2": dd.PolynomialSchedule(2.0),
    "polynomial05": dd.PolynomialSchedule(0.5),
}
T_NEAR = {0.0: 1e-12, 1.0: 1.0 - 1e-6}  # 1e-12: alpha = 1 - t^(1/2) converges slowly


def _make_process(kind, schedule):
    if kind == "masked":
        return dd.Masked(sup.V, schedule)
    if kind == "uniform":
        return dd.Uniform(sup.V, schedule)
    return dd.General(sup.random_generator(sup.V, seed=1), schedule)


def _table_loss(loss, process, t, prediction, x0=X0):
    """Mean loss and its gradient w.r.t. a table model `logits = table[x_t]` at fixed times."""
    x0 = jnp.asarray(x0, jnp.int32)
    table = 0.3 * jnp.sin(jnp.arange(process.num_input_ids * sup.V, dtype=jnp.float32))
    table = table.reshape(process.num_input_ids, sup.V)

    def mean_loss(table):
        model = lambda xt, tt: table[xt]
        t_arr = jnp.full(x0.shape[0], t, jnp.float32)
        return jnp.mean(loss(jax.random.key(5), process, model, x0, t=t_arr, prediction=prediction))

    value, grad = jax.value_and_grad(mean_loss)(table)
    return float(value), np.asarray(grad), table


def test_masked_elbo_value_and_gradient_at_t0():
    """At t = 0 no token is masked: the estimate is exactly 0 and so is its gradient (it was NaN:
    the weight 1/t = inf multiplied a zero cotangent)."""
    for schedule in (dd.LinearSchedule(), dd.CosineSchedule(), dd.PolynomialSchedule(0.5)):
        process = dd.Masked(sup.V, schedule)
        value, grad, _ = _table_loss(dd.masked_elbo, process, 0.0, "denoiser")
        assert value == 0.0
        assert np.all(np.isfinite(grad)) and np.all(grad == 0.0)
        near_value, near_grad, _ = _table_loss(dd.masked_elbo, process, 1e-7, "denoiser")
        np.testing.assert_allclose(value, near_value, atol=1e-6)
        np.testing.assert_allclose(grad, near_grad, atol=1e-6)


def test_score_entropy_uniform_at_t0_is_the_analytic_limit():
    """t -> 0: x_t = x_0, the true ratios q_t(y|x_0) / q_t(x_0|x_0) -> 0, so the integrand
    tends to beta(0) / V sum_{y != x_t} s_y with s = exp(model output); beta(0) = 1 (linear)."""
    process = dd.Uniform(sup.V)
    value, grad, table = _table_loss(dd.score_entropy, process, 0.0, "concrete_score")
    s = np.exp(np.asarray(table, np.float64))
    x = np.asarray(X0)
    off = 1.0 - np.eye(sup.V)
    per_seq = (s[x] * off[x]).sum(axis=(1, 2)) / sup.V
    np.testing.assert_allclose(value, per_seq.mean(), rtol=1e-5)
    # d/d table[i, y] = (1 / B) (number of tokens equal to i) s[i, y] / V for y != i.
    counts = np.bincount(x.ravel(), minlength=sup.V)
    expected_grad = counts[:, None] * s * off / (sup.V * len(x))
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-5, atol=1e-7)
    near_value, near_grad, _ = _table_loss(dd.score_entropy, process, 1e-7, "concrete_score")
    np.testing.assert_allclose(value, near_value, rtol=1e-4)
    np.testing.assert_allclose(grad, near_grad, rtol=1e-4, atol=1e-6)


def test_ctmc_elbo_general_at_t1_is_the_limit():
    """alpha(1) = 0: model and true reverse rates both equal pi_y / pi_x (any denoiser), and the
    integrand beta (R_theta - R_c)^2 / R_c ~ a^(2 gap - 1) -> 0 for spectral gap > 1/2."""
    process = dd.General(sup.random_generator(sup.V, seed=1))
    value, grad, _ = _table_loss(dd.ctmc_elbo, process, 1.0, "denoiser")
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    np.testing.assert_allclose(value, 0.0, atol=1e-6)
    np.testing.assert_allclose(grad, 0.0, atol=1e-6)
    near_value, near_grad, _ = _table_loss(dd.ctmc_elbo, process, 1.0 - 1e-5, "denoiser")
    np.testing.assert_allclose(value, near_value, atol=1e-6)
    np.testing.assert_allclose(grad, near_grad, atol=1e-6)


def _refused_at_end(kind, schedule, loss, prediction, t):
    """The endpoint cases whose limit is infinite (for a generic model), refused with t named."""
    sched = SCHEDULES[schedule]
    alpha_end = sched.alpha_at(t)
    rate_end = float(sched.rate(jnp.float32(t)))
    if kind == "masked":
        return False  # nothing masked at alpha = 1; masking rates are finite at t = 1
    if loss == "flow_matching_ce":
        # The concrete score carries no information about x_0 where alpha(t) = 0.
        return prediction == "concrete_score" and alpha_end == 0.0
    if prediction == "denoiser":
        # R_theta(y) ~ p_theta(y | x_t) alpha / (1 - alpha) -> inf as t -> 0 for alpha(0) = 1.
        return t == 0.0 and alpha_end == 1.0
    # Concrete score: the rate scale beta(t) is infinite and the rates differ.
    return not np.isfinite(rate_end)


ENDPOINT_CASES = [
    (kind, schedule, loss, prediction, t)
    for kind in ("masked", "uniform", "general")
    for schedule in SCHEDULES
    for loss in ("masked_elbo", "ctmc_elbo", "score_entropy", "flow_matching_ce")
    for prediction in ("denoiser", "concrete_score")
    for t in (0.0, 1.0)
    if (loss != "masked_elbo" or (kind == "masked" and prediction == "denoiser"))
    # An arbitrary (inconsistent) concrete score implies a denoiser with clipped, possibly zero
    # mass as alpha -> 0, so its cross-entropy can be inf at any small alpha(t) > 0: a property
    # of the model, not of the endpoint; t = 1 with alpha(1) = 0 is still covered (refused).
    and not (
        loss == "flow_matching_ce"
        and prediction == "concrete_score"
        and kind != "masked"
        and t == 1.0
        and SCHEDULES[schedule].alpha_at(1.0) > 0.0
    )
    # The masked concrete score needs alpha(1) > 0 for the rate losses (refused for any t).
    and not (
        kind == "masked"
        and prediction == "concrete_score"
        and loss in ("ctmc_elbo", "score_entropy")
        and SCHEDULES[schedule].alpha_at(1.0) == 0.0
    )
]


@pytest.mark.slow  # a sweep: ~60 s on 2 cores
@pytest.mark.parametrize("kind, schedule, loss, prediction, t", ENDPOINT_CASES)
def test_losses_at_exact_endpoints(kind, schedule, loss, prediction, t):
    """Every loss at t = 0 and t = 1: the finite limit (value and gradient match a nearby t), or
    a ValueError naming t where the limit is infinite."""
    process = _make_process(kind, SCHEDULES[schedule])
    fn = dd.loss_fn(loss)
    if _refused_at_end(kind, schedule, loss, prediction, t):
        with pytest.raises(ValueError, match=r"\bt must lie in"):
            _table_loss(fn, process, t, prediction)
        return
    value, grad, _ = _table_loss(fn, process, t, prediction)
    assert np.isfinite(value) and np.all(np.isfinite(grad)), (value, grad)
    near_value, near_grad, _ = _table_loss(fn, process, T_NEAR[t], prediction)
    scale = max(1.0, abs(near_value))
    np.testing.assert_allclose(value, near_value, rtol=2e-3, atol=2e-3 * scale)
    np.testing.assert_allclose(grad, near_grad, rtol=2e-3, atol=2e-3 * scale)


def test_losses_refuse_non_token_matrices():
    """x0 must be `[B, L]`: a 1-D array used to be read as L sequences of length 1."""
    process = dd.Masked(sup.V)
    model = TGT.denoiser(process)
    for name in dd.losses.names():
        for bad in (jnp.asarray(X0[0], jnp.int32), jnp.asarray(X0, jnp.int32)[..., None]):
            with pytest.raises(ValueError, match=r"x0 has shape .*expected \[B, L\]"):
                dd.loss_fn(name)(jax.random.key(0), process, model, bad, prediction="denoiser")
    with pytest.raises(ValueError, match=r"x0 has shape \(3,\).*expected \[B, L\]"):
        dd.elbo(jax.random.key(0), process, model, jnp.asarray(X0[0], jnp.int32))


def test_stratified_times_take_checked_bounds():
    t = np.sort(np.asarray(dd.stratified_times(jax.random.key(0), 8, t_min=0.2, t_max=0.6)))
    assert t.min() > 0.2 and t.max() <= 0.6
    np.testing.assert_allclose(np.diff(t), 0.4 / 8, atol=1e-6)
    for t_min, t_max in ((0.6, 0.2), (0.5, 0.5), (-0.1, 0.5), (0.0, 1.5), (float("nan"), 1.0)):
        with pytest.raises(ValueError, match="t_min|t_max"):
            dd.stratified_times(jax.random.key(0), 8, t_min=t_min, t_max=t_max)
    with pytest.raises((TypeError, ValueError), match="batch"):
        dd.stratified_times(jax.random.key(0), 0)


def test_antithetic_times_is_a_deprecated_alias():
    """The old name draws the same stratified grid and says which name replaced it."""
    key = jax.random.key(4)
    with pytest.warns(DeprecationWarning, match="stratified_times"):
        old = dd.antithetic_times(key, 8, t_min=0.1, t_max=0.9)
    np.testing.assert_array_equal(old, dd.stratified_times(key, 8, t_min=0.1, t_max=0.9))
