"""The step interface from the outside: a user-written `Step` (public imports only) driven by the
exact score of a Gaussian mixture, `run_steps` with trajectories and explicit grids, and `pc`
with a predictor step object."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffax.continuous as dc

VP = dc.VP()
N_MIX = 4096
IDENTITY_AND_JIT = pytest.mark.parametrize(
    "transform", [lambda f: f, jax.jit], ids=["eager", "jit"]
)


# The ten-line user step of docs/continuous.md ("Writing a sampler"): deterministic DDIM.
def ddim_by_hand(model, key, x, state, t, s):
    x0, eps = model.denoise(x, t)  # one network evaluation, counted in info["nfe"]
    process = model.process
    return process.alpha(s) * x0 + process.sigma(s) * eps, state


MY_DDIM = dc.Step(init=lambda model, x, ts: (), step=ddim_by_hand, name="my_ddim", grid="logsnr")


def wrong_noise_level(model, key, x, state, t, s):
    """A plausible bug (keeps the noise level of t): the bound below must catch it."""
    x0, eps = model.denoise(x, t)
    return model.process.alpha(s) * x0 + model.process.sigma(t) * eps, state


@pytest.fixture(scope="module")
def reference(ring_mixture):
    exact = ring_mixture.sample(jax.random.PRNGKey(1), N_MIX)
    mean_logp = float(
        ring_mixture.log_prob(ring_mixture.sample(jax.random.PRNGKey(2), 100_000)).mean()
    )
    return exact, mean_logp


def _errors(ring_mixture, reference, x):
    exact, mean_logp = reference
    sw = float(dc.sliced_wasserstein(jax.random.PRNGKey(9), x, exact))
    return sw, float(ring_mixture.log_prob(x).mean()) - mean_logp


@IDENTITY_AND_JIT
def test_user_step_reproduces_the_mixture(transform, ring_mixture, reference):
    model = ring_mixture.model_fn(VP, "eps")

    def run(step, **options):
        return transform(
            lambda k: dc.sample(k, VP, model, (N_MIX, 2), sampler=step, num_steps=50, **options)
        )(jax.random.PRNGKey(3))

    x, info = run(MY_DDIM)
    assert int(info["nfe"]) == 51  # 50 steps + the final denoising
    sw, dlogp = _errors(ring_mixture, reference, x)
    assert sw < 0.08 and abs(dlogp) < 0.08, (sw, dlogp)
    # The built-in DDIM steps to t = 0 on its own default grid; on MY_DDIM's grid and end (t_min,
    # then the final denoising) it takes the same path.
    builtin, _ = run(dc.samplers.ddim(), denoise=True, grid="logsnr", t_min=1e-3)
    np.testing.assert_allclose(x, builtin, rtol=1e-5, atol=1e-5)
    wrong, _ = run(MY_DDIM._replace(step=wrong_noise_level))
    sw_wrong, dlogp_wrong = _errors(ring_mixture, reference, wrong)
    assert sw_wrong > 0.15 or abs(dlogp_wrong) > 0.3, (sw_wrong, dlogp_wrong)


def test_non_uniform_explicit_grid_converges_to_the_exact_flow_map():
    """Gaussian data N(m, s^2): along the PF-ODE (x_t - alpha m)/std_t is constant, so the exact
    map from t = 1 to t_min is known; the user step converges to it on an explicit, uneven grid
    (dense near t_min), at first order."""
    m, sd, t_min = 1.5, 0.5, 1e-3
    gauss = dc.GaussianMixture(jnp.ones(1), jnp.full((1, 2), m), jnp.full((1, 2), sd))
    model = gauss.model_fn(VP, "eps")
    x1 = jax.random.normal(jax.random.PRNGKey(0), (256, 2))

    def std(t):
        return jnp.sqrt(VP.alpha(t) ** 2 * sd**2 + VP.sigma(t) ** 2)

    exact = VP.alpha(t_min) * m + std(t_min) * (x1 - VP.alpha(1.0) * m) / std(1.0)
    errors = []
    for n in (10, 40):
        ts = np.concatenate([np.linspace(1.0, 0.3, n, endpoint=False), np.geomspace(0.3, t_min, n)])
        x, info = dc.run_steps(None, MY_DDIM, VP, model, x1, ts, denoise=False)
        assert int(info["nfe"]) == len(ts) - 1
        errors.append(float(jnp.sqrt(jnp.mean((x - exact) ** 2))))
    assert errors[1] < 0.025 and errors[0] / errors[1] > 3.0, errors


@IDENTITY_AND_JIT
def test_trajectory_shapes_and_endpoints(transform, ring_mixture):
    model = ring_mixture.model_fn(VP, "eps")
    x1 = jax.random.normal(jax.random.PRNGKey(0), (8, 2))
    ts = dc.time_grid(VP, 6, t_min=1e-3, grid="logsnr")

    def run(x, denoise):
        return transform(
            lambda x: dc.run_steps(
                None, MY_DDIM, VP, model, x, ts, denoise=denoise, trajectory=True
            )
        )(x)

    x, info = run(x1, False)
    traj = info["trajectory"]
    assert traj.shape == (7, 8, 2)
    np.testing.assert_array_equal(traj[0], x1)
    np.testing.assert_array_equal(traj[-1], x)
    # x at grid time i is what running the first i steps returns.
    x3, _ = dc.run_steps(None, MY_DDIM, VP, model, x1, ts[:4], denoise=False)
    np.testing.assert_allclose(traj[3], x3, rtol=1e-6, atol=1e-6)
    # With the final denoising the sample is the x0 prediction at the trajectory's end.
    x_denoised, info = run(x1, True)
    x0_hat, _ = dc.make_denoiser(VP, model, "eps")(traj[-1], ts[-1])
    np.testing.assert_allclose(x_denoised, x0_hat, rtol=1e-6, atol=1e-6)
    assert int(info["nfe"]) == 7
    # Through `sample` (any sampler, by name or object).
    x, info = dc.sample(
        jax.random.PRNGKey(0), VP, model, (8, 2), sampler="pc", num_steps=5, trajectory=True
    )
    assert info["trajectory"].shape == (6, 8, 2) and int(info["nfe"]) == 11


@pytest.mark.slow
def test_pc_takes_a_predictor_step(ring_mixture, reference):
    model = ring_mixture.model_fn(VP, "eps")
    key = jax.random.PRNGKey(3)

    def run(sampler, **options):
        return jax.jit(lambda k: dc.sample(k, VP, model, (N_MIX, 2), sampler=sampler, **options))(
            key
        )

    default, _ = run("pc", num_steps=20)
    ancestral, _ = run(dc.samplers.pc(predictor=dc.samplers.ddim(eta=1.0)), num_steps=20)
    np.testing.assert_array_equal(default, ancestral)  # the default predictor
    # A multistep predictor keeps its history in the state that pc passes through: with no
    # corrector step, pc is its predictor exactly.
    ts = dc.time_grid(VP, 20, t_min=1e-3, grid="logsnr")  # the grids' defaults differ
    dpm = dc.samplers.dpm_solver_pp_2m()
    multistep, _ = run(dpm, num_steps=20, ts=ts, denoise=True)
    pc_multistep, info = run("pc", predictor=dpm, corrector_steps=0, num_steps=20, ts=ts)
    np.testing.assert_array_equal(multistep, pc_multistep)
    assert int(info["nfe"]) == 21
    for predictor in (MY_DDIM, "euler_maruyama"):
        x, info = run("pc", predictor=predictor, num_steps=100)
        assert int(info["nfe"]) == 2 * 100 + 1
        sw, dlogp = _errors(ring_mixture, reference, x)
        assert sw < 0.08 and abs(dlogp) < 0.08, (predictor, sw, dlogp)


def test_counting_evaluations_made_inside_control_flow(ring_mixture):
    """A step that evaluates the network under `lax.cond` counts what it spent."""
    model_fn = ring_mixture.model_fn(VP, "eps")

    def heun_above_half(model, key, x, state, t, s):
        d = model.velocity(x, t)  # counted automatically
        x_euler = x + (s - t) * d

        def heun(_):  # inside cond: call through `uncounted`, report the count
            return x + 0.5 * (s - t) * (d + model.uncounted.velocity(x_euler, s)), 1

        x_s, extra = jax.lax.cond(t > 0.55, heun, lambda _: (x_euler, 0), None)
        model.count(extra)
        return x_s, state

    step = dc.Step(init=lambda model, x, ts: (), step=heun_above_half)
    ts = jnp.linspace(1.0, 1e-3, 11)
    x1 = jax.random.normal(jax.random.PRNGKey(0), (4, 2))
    for transform in (lambda f: f, jax.jit):
        _, info = transform(lambda x: dc.run_steps(None, step, VP, model_fn, x, ts))(x1)
        assert int(info["nfe"]) == 10 + 5 + 1  # t = 1.0, 0.9, ..., 0.6 take the Heun branch


def test_errors_name_the_allowed_values(ring_mixture):
    model = ring_mixture.model_fn(VP, "eps")
    run = lambda **kw: dc.sample(jax.random.PRNGKey(0), VP, model, (4, 2), num_steps=3, **kw)  # noqa: E731
    with pytest.raises(TypeError, match="unknown option 'eta' for step 'my_ddim'.*denoise"):
        run(sampler=MY_DDIM, eta=1.0)
    with pytest.raises(TypeError, match="sampler must be a name in SAMPLERS.*ddim.*or a"):
        run(sampler=ddim_by_hand)
    with pytest.raises(TypeError, match="step must be a diffax.continuous.Step"):
        dc.run_steps(None, "ddim", VP, model, jnp.zeros((4, 2)), [1.0, 0.5])
    with pytest.raises(TypeError, match="predictor must be a diffax.continuous.Step"):
        dc.samplers.pc(predictor=ddim_by_hand)
    with pytest.raises(ValueError, match="unknown sampler 'ddpm' for argument 'predictor'"):
        dc.samplers.pc(predictor="ddpm")
    with pytest.raises(ValueError, match="sde_t_max"):  # a pc step keeps the SDE domain check
        dc.run_steps(
            jax.random.PRNGKey(0),
            dc.samplers.pc(predictor=MY_DDIM),
            dc.RectifiedFlow(),
            model,
            jnp.zeros((4, 2)),
            [1.0, 0.5],
        )
