"""Samplers driven by the exact denoiser / concrete score must reproduce the target."""

import discrete_support as sup
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffax.discrete as dd

TGT = sup.target()
N = 8000
NOISE_TV = sup.tv_threshold(TGT, N)  # TV that sampling noise alone stays below (5 sigma)
MASKED_LL = dd.Masked(sup.V, dd.LogLinearSchedule(1e-3))  # concrete scores need alpha(1) > 0


def model_for(process, prediction):
    return TGT.denoiser(process) if prediction == "denoiser" else TGT.concrete_score(process)


def tv(samples):
    return TGT.total_variation(samples)


@pytest.mark.parametrize("num_steps", [1, 5])
def test_first_hitting_is_exact_at_any_step_count(num_steps):
    process = dd.Masked(sup.V)
    x, nfe = sup.run_sampler(process, TGT.denoiser(process), "first_hitting", num_steps, N)
    assert tv(x) < NOISE_TV
    assert nfe == sup.L


# Every grid sampler and every process at least once (each case compiles two samplers).
CASES = [
    ("masked", "ancestral", "denoiser"),
    ("masked", "tau_leaping", "denoiser"),
    ("masked", "pc", "denoiser"),
    ("masked", "remdm", "denoiser"),
    ("masked-loglinear", "analytic", "concrete_score"),
    ("uniform", "euler", "concrete_score"),
    ("uniform", "tau_leaping", "denoiser"),
    ("uniform", "pc", "denoiser"),
    ("general", "ancestral", "denoiser"),
    ("general", "analytic", "concrete_score"),
]


@pytest.mark.parametrize("name, sampler, prediction", CASES, ids=["-".join(c) for c in CASES])
def test_error_falls_as_steps_grow(name, sampler, prediction):
    process = MASKED_LL if name == "masked-loglinear" else sup.processes()[name]
    model = model_for(process, prediction)
    coarse, nfe_coarse = sup.run_sampler(process, model, sampler, 2, N, prediction=prediction)
    fine, nfe_fine = sup.run_sampler(process, model, sampler, 64, N, prediction=prediction)
    assert tv(fine) < 0.05, tv(fine)
    assert tv(coarse) > tv(fine) + 0.02, (tv(coarse), tv(fine))
    per_step = 2 if sampler == "pc" else 1  # one corrector evaluation per interior step
    assert (nfe_coarse, nfe_fine) == (per_step * 2 - (per_step - 1), per_step * 64 - (per_step - 1))


def test_confidence_orders():
    process = dd.Masked(sup.V)
    model = TGT.denoiser(process)
    # One token per step, left to right: autoregressive with exact conditionals, so exact.
    x, nfe = sup.run_sampler(process, model, "confidence", sup.L, N, block_length=1)
    assert tv(x) < NOISE_TV and nfe == sup.L
    # One token per step in an order that does not depend on the draws: also exact.
    x, _ = sup.run_sampler(process, model, "confidence", sup.L, N, confidence="margin")
    assert tv(x) < NOISE_TV
    # Ranking by the probability of the drawn token favours likely draws: biased however many
    # steps (MaskGIT / LLaDA trade this bias for sample quality).
    x, _ = sup.run_sampler(process, model, "confidence", 12, N, confidence="prob")
    assert tv(x) > 0.1
    assert np.all(x < sup.V)


def test_caching_skips_network_calls_under_jit():
    process = dd.Masked(sup.V)
    model = TGT.denoiser(process)
    calls = []

    def counting_model(x, t):
        jax.debug.callback(lambda: calls.append(1))
        return model(x, t)

    fn = jax.jit(
        lambda key: dd.sample(
            key, process, counting_model, (1, sup.L), sampler="ancestral", num_steps=64, cache=True
        )
    )
    x, info = fn(jax.random.key(0))
    jax.effects_barrier()
    assert 1 <= int(info["nfe"]) <= sup.L + 1 and len(calls) == int(info["nfe"])
    # Over many independent runs the cached sampler still has the exact 64-step law.
    many = jax.jit(
        jax.vmap(
            lambda key: dd.sample(
                key, process, model, (1, sup.L), sampler="ancestral", num_steps=64, cache=True
            )
        )
    )
    x, info = many(jax.random.split(jax.random.key(1), N))
    assert tv(np.asarray(x)[:, 0]) < 0.04
    assert int(info["nfe"].max()) <= sup.L + 1


def test_infilling_gives_the_exact_conditional():
    process = dd.Masked(sup.V)
    fixed_tokens = jnp.full((N, sup.L), 2, jnp.int32)
    fixed_mask = jnp.zeros((N, sup.L), bool).at[:, 1].set(True)
    x, nfe = sup.run_sampler(
        process,
        TGT.denoiser(process),
        "first_hitting",
        1,
        N,
        fixed_tokens=fixed_tokens,
        fixed_mask=fixed_mask,
    )
    assert np.all(x[:, 1] == 2) and nfe == sup.L - 1
    keep = TGT.sequences[:, 1] == 2
    conditional = dd.EnumeratedTarget(np.where(keep, TGT.probs, 0) / TGT.probs[keep].sum(), 3, 3)
    assert conditional.total_variation(x) < NOISE_TV
    uniform = dd.Uniform(sup.V)
    x, _ = sup.run_sampler(
        uniform,
        TGT.denoiser(uniform),
        "euler",
        4,
        64,
        fixed_tokens=fixed_tokens[:64],
        fixed_mask=fixed_mask[:64],
    )
    assert np.all(x[:, 1] == 2)


def test_top_p_and_temperature_sharpen():
    process = dd.Masked(sup.V)
    model = TGT.denoiser(process)
    marginal_mode = np.argmax(np.einsum("n,nlv->lv", TGT.probs, np.eye(3)[TGT.sequences]), -1)
    x, _ = sup.run_sampler(process, model, "ancestral", 1, 64, top_p=1e-6)
    np.testing.assert_array_equal(x, np.broadcast_to(marginal_mode, x.shape))
    x, _ = sup.run_sampler(process, model, "ancestral", 1, 64, temperature=1e-3)
    np.testing.assert_array_equal(x, np.broadcast_to(marginal_mode, x.shape))


def test_registry():
    assert dd.samplers.names() == [
        "analytic",
        "ancestral",
        "confidence",
        "euler",
        "first_hitting",
        "pc",
        "remdm",
        "tau_leaping",
    ]


@pytest.mark.parametrize(
    "process, kwargs, error, match",
    [
        (dd.Uniform(3), dict(sampler="leapfrog"), ValueError, "allowed values: analytic"),
        (dd.Uniform(3), dict(sampler="first_hitting"), TypeError, "allowed processes: Masked"),
        (dd.Uniform(3), dict(sampler="remdm"), TypeError, "needs process=Masked"),
        (dd.Uniform(3), dict(sampler="confidence"), TypeError, "needs process=Masked"),
        (dd.Uniform(3), dict(sampler="ancestral", cache=True), ValueError, "cache=True needs"),
        (dd.Masked(3), dict(sampler="euler", prediction="score"), ValueError, "'concrete_score'"),
        (dd.Masked(3), dict(sampler="euler", prediction="concrete_score"), ValueError, "alpha"),
        (dd.Masked(3), dict(sampler="euler", num_steps=0), ValueError, "num_steps"),
        (dd.Masked(3), dict(sampler="pc", predictor="leap"), ValueError, "'tau_leaping'"),
        (dd.Masked(3), dict(sampler="remdm", strategy="switch"), ValueError, "'cap'"),
        (dd.Masked(3), dict(sampler="confidence", block_length=2), ValueError, "block_length"),
        (dd.Masked(3), dict(sampler="ancestral", temperature=0.0), ValueError, "temperature"),
        (
            dd.Masked(3),
            dict(
                sampler="ancestral",
                fixed_tokens=jnp.full((2, 3), 3),
                fixed_mask=jnp.ones((2, 3), bool),
            ),
            ValueError,
            "fixed_tokens holds ids",
        ),
    ],
)
def test_bad_arguments(process, kwargs, error, match):
    kwargs = {"num_steps": 4, **kwargs}
    model = lambda x, t: jnp.zeros(x.shape + (3,))
    with pytest.raises(error, match=match):
        dd.sample(jax.random.key(0), process, model, (2, 3), **kwargs)


def test_bad_shapes():
    model = lambda x, t: jnp.zeros(x.shape + (4,))
    with pytest.raises(ValueError, match="model_fn output has shape"):
        dd.sample(jax.random.key(0), dd.Masked(3), model, (2, 3), sampler="ancestral", num_steps=2)
    with pytest.raises(ValueError, match="shape must be"):
        dd.sample(jax.random.key(0), dd.Masked(3), model, (2, 3, 1), sampler="euler", num_steps=2)


# -- Regression tests: "nothing lost, nothing silent" ----------------------------------------

N_BIG = 2**16


@pytest.mark.parametrize("num_steps", [1, 2, 4])
def test_analytic_score_step_where_alpha_is_zero(num_steps):
    """Uniform with the linear schedule starts at alpha(1) = 0, where the concrete score is
    identically 1 and the Tweedie formula is 0/0. Its limit, p(x_s | x_1) = p_s under the
    model, makes the score-driven analytic sampler as good as the denoiser-driven ancestral one
    (same law: TVs equal within Monte-Carlo error). It used to keep x_1 (TV 0.19 vs 0.10 at 2
    steps)."""
    process = dd.Uniform(sup.V)
    ancestral, _ = sup.run_sampler(process, TGT.denoiser(process), "ancestral", num_steps, N_BIG)
    analytic, nfe = sup.run_sampler(
        process,
        TGT.concrete_score(process),
        "analytic",
        num_steps,
        N_BIG,
        seed=1,
        prediction="concrete_score",
    )
    # TV of n draws from a law q fluctuates by at most 1/(2 sqrt(n)); two independent runs.
    se = np.sqrt(2.0) * 0.5 / np.sqrt(N_BIG)
    assert tv(analytic) <= tv(ancestral) + 3 * se, (tv(analytic), tv(ancestral), se)
    assert nfe == num_steps
    if num_steps == 2:  # the analytic predictor of pc (no corrector: the same sampler)
        x, _ = sup.run_sampler(
            process,
            TGT.concrete_score(process),
            "pc",
            num_steps,
            N_BIG,
            seed=2,
            prediction="concrete_score",
            predictor="analytic",
            num_corrector_steps=0,
        )
        assert tv(x) <= tv(ancestral) + 3 * se, (tv(x), tv(ancestral), se)


def test_analytic_score_step_where_alpha_is_zero_cosine():
    """The cosine schedule has alpha'(1) = 0 too: the limit uses the second time derivative."""
    process = dd.Uniform(sup.V, dd.CosineSchedule())
    ancestral, _ = sup.run_sampler(process, TGT.denoiser(process), "ancestral", 2, N_BIG)
    analytic, _ = sup.run_sampler(
        process, TGT.concrete_score(process), "analytic", 2, N_BIG, 1, prediction="concrete_score"
    )
    se = np.sqrt(2.0) * 0.5 / np.sqrt(N_BIG)
    assert tv(analytic) <= tv(ancestral) + 3 * se, (tv(analytic), tv(ancestral), se)


def test_ancestral_score_step_where_alpha_is_zero():
    """The alpha = 0 limit lives in the model wrapper, so ancestral driven by the concrete score
    of Uniform (linear schedule) has the law of ancestral driven by the denoiser."""
    process = dd.Uniform(sup.V)
    ancestral, _ = sup.run_sampler(process, TGT.denoiser(process), "ancestral", 2, N_BIG)
    score, nfe = sup.run_sampler(
        process, TGT.concrete_score(process), "ancestral", 2, N_BIG, 1, prediction="concrete_score"
    )
    se = np.sqrt(2.0) * 0.5 / np.sqrt(N_BIG)
    assert abs(tv(score) - tv(ancestral)) <= 3 * se, (tv(score), tv(ancestral), se)
    assert nfe == 2


def _nan_model(process, positions=slice(None), prediction="denoiser"):
    base = model_for(process, prediction)

    def model(x, t):
        out = base(x, t)
        return out.at[:, positions].set(jnp.nan)

    return model


NAN_CASES = [
    ("masked", "ancestral", "denoiser"),
    ("masked", "first_hitting", "denoiser"),
    ("masked", "confidence", "denoiser"),
    ("masked", "remdm", "denoiser"),
    ("masked", "pc", "denoiser"),
    ("uniform", "euler", "denoiser"),
    ("uniform", "tau_leaping", "denoiser"),
    ("uniform", "analytic", "concrete_score"),  # first step: the alpha = 0 limit (jvp in t)
    ("general", "ancestral", "denoiser"),
]


@pytest.mark.parametrize(
    "name, sampler, prediction", NAN_CASES, ids=["-".join(c[:2]) for c in NAN_CASES]
)
def test_nan_model_output_is_never_a_silent_token(name, sampler, prediction):
    """Eager: a ValueError naming the model output. Under jit (no host round trip inside the
    loop): the positions whose model output was not finite come back as -1."""
    process = sup.processes()[name]
    with pytest.raises(ValueError, match="model_fn output is not finite"):
        dd.sample(
            jax.random.key(0),
            process,
            _nan_model(process, prediction=prediction),
            (4, sup.L),
            sampler=sampler,
            num_steps=4,
            prediction=prediction,
        )
    model = _nan_model(process, 1, prediction)
    x, _ = sup.run_sampler(process, model, sampler, 4, 64, prediction=prediction)
    assert np.all(x[:, 1] == -1), x[:8]
    assert np.all((x[:, [0, 2]] >= 0) & (x[:, [0, 2]] < sup.V)), x[:8]


@pytest.mark.parametrize("sampler", ["ancestral", "confidence"])
def test_unknown_option_lists_the_allowed_ones(sampler):
    process = dd.Masked(sup.V)
    model = TGT.denoiser(process)
    match = (
        f"unknown option 'bogus_option' for sampler '{sampler}'; allowed options: .*temperature"
        ".*fixed_mask"
    )
    with pytest.raises(ValueError, match=match):
        dd.sample(
            jax.random.key(0),
            process,
            model,
            (2, sup.L),
            sampler=sampler,
            num_steps=2,
            bogus_option=1,
        )
    with pytest.raises(ValueError, match=match):
        dd.sample(
            jax.random.key(0),
            process,
            model,
            (2, sup.L),
            sampler=dd.SAMPLERS.get(sampler)(),
            num_steps=2,
            bogus_option=1,
        )


def test_traced_options_under_jit():
    """Option values may be traced (e.g. a temperature sweep under jit): checks on their values
    run only when they are concrete."""
    process = dd.Masked(sup.V)
    model = TGT.denoiser(process)

    def run(key, temperature, top_p, eta):
        return dd.sample(
            key,
            process,
            model,
            (16, sup.L),
            sampler="remdm",
            num_steps=4,
            temperature=temperature,
            top_p=top_p,
            eta=eta,
        )[0]

    key = jax.random.key(0)
    np.testing.assert_array_equal(jax.jit(run)(key, 0.7, 0.9, 0.1), run(key, 0.7, 0.9, 0.1))
    with pytest.raises(ValueError, match="temperature"):
        run(key, 0.0, 0.9, 0.1)
