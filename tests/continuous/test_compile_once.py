"""Samplers compile once: grids and step counts are inputs, final steps to t = 0 cost no extra
evaluation, deterministic steps draw no random numbers, float64 stays float64, and the
persistent compilation cache serves a fresh process."""

import contextlib
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax._src.dispatch import BACKEND_COMPILE_EVENT

import diffax.continuous as dc
from diffax.core import enable_compilation_cache

VP = dc.VP()
M, S = 1.5, 0.5
GAUSS = dc.GaussianMixture(jnp.ones(1), jnp.full((1, 2), M), jnp.full((1, 2), S))
MIX = dc.GaussianMixture(
    jnp.asarray([0.6, 0.4]), jnp.asarray([[-1.0, 0.5], [1.5, -0.5]]), jnp.full((2, 2), 0.4)
)
TO_ZERO = ("ddim", "dpm_solver_pp_2m", "dpm_solver_pp_3m", "dpm_solver_pp_2s", "edm_heun")


@contextlib.contextmanager
def count_compilations():
    """Counts XLA backend compilations made inside the block (`jax.monitoring`)."""
    seen = []

    def listener(event, duration, **kwargs):
        if event == BACKEND_COMPILE_EVENT:
            seen.append(kwargs.get("fun_name"))

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield seen
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


@pytest.mark.parametrize("name", ["dpm_solver_pp_2m", "edm_heun"])
def test_a_new_grid_of_the_same_length_does_not_recompile(name):
    model = MIX.model_fn(VP, "eps")
    run = jax.jit(lambda k, ts: dc.sample(k, VP, model, (64, 2), sampler=name, num_steps=6, ts=ts))
    t_max = VP.sde_t_max if dc.SAMPLERS.get(name)().uses_sde_t_max else 1.0
    grids = [
        dc.time_grid(VP, 6, t_min=t_min, t_max=t_max, grid=g, to_zero=True)
        for g, t_min in (("logsnr", 1e-2), ("uniform", 0.05), ("karras", 3e-3))
    ]
    key = jax.random.PRNGKey(0)
    jax.block_until_ready(run(key, grids[0]))
    with count_compilations() as compiled:
        outs = [jax.block_until_ready(run(key, ts)) for ts in grids[1:]]
    assert compiled == [], compiled
    # ... and each traced grid gives what the same grid gives when passed concretely.
    for ts, (x, info) in zip(grids[1:], outs, strict=True):
        ref, ref_info = dc.sample(key, VP, model, (64, 2), sampler=name, num_steps=6, ts=ts)
        np.testing.assert_allclose(x, ref, rtol=1e-5, atol=1e-5)
        assert int(info["nfe"]) == int(ref_info["nfe"])


@pytest.mark.parametrize("name", ["dpm_solver_pp_3m", "ddim", "euler_maruyama", "edm_heun"])
def test_num_steps_bucket_compiles_once_and_equals_the_fixed_length_path(name):
    """One compilation for every num_steps <= max_steps, and the same samples as the unpadded
    grid. Compared in float64: XLA compiles the while loop and the fixed-length scan separately,
    so in float32 they differ by rounding, which the stochastic samplers amplify (~1e-5)."""
    options = {"eta": 1.0} if name == "ddim" else {}
    with jax.enable_x64(True):
        model = MIX.model_fn(VP, "eps")
        bucketed = jax.jit(
            lambda k, n: dc.sample(
                k, VP, model, (32, 2), sampler=name, num_steps=n, max_steps=12, **options
            )
        )
        key = jax.random.PRNGKey(3)
        jax.block_until_ready(bucketed(key, 3))
        for n in (1, 5, 12):
            with count_compilations() as compiled:
                x, info = jax.block_until_ready(bucketed(key, n))
            assert compiled == [], (n, compiled)
            assert x.dtype == jnp.float64
            ref, ref_info = jax.jit(
                lambda k, n=n: dc.sample(
                    k, VP, model, (32, 2), sampler=name, num_steps=n, **options
                )
            )(key)
            np.testing.assert_allclose(x, ref, rtol=1e-10, atol=1e-10)
            assert int(info["nfe"]) == int(ref_info["nfe"]), (n, info["nfe"], ref_info["nfe"])


def test_bucketed_trajectory_repeats_the_final_state():
    model = MIX.model_fn(VP, "eps")
    ts = dc.time_grid(VP, 4, t_min=1e-2, grid="logsnr", to_zero=True, max_steps=7)
    x1 = VP.prior_sample(jax.random.PRNGKey(0), (8, 2))
    step = dc.samplers.dpm_solver_pp_2m()
    x, info = dc.run_steps(None, step, VP, model, x1, ts, num_steps=4, trajectory=True)
    ref, ref_info = dc.run_steps(None, step, VP, model, x1, ts[:5], trajectory=True)
    traj = info["trajectory"]
    assert traj.shape == (8, 8, 2)
    np.testing.assert_allclose(traj[:5], ref_info["trajectory"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(traj[5:], jnp.broadcast_to(x, (3, 8, 2)))
    np.testing.assert_allclose(x, ref, rtol=1e-6, atol=1e-6)


def test_bucket_arguments_are_checked():
    model = MIX.model_fn(VP, "eps")
    with pytest.raises(ValueError, match="num_steps=9 exceeds max_steps=8"):
        dc.sample(
            jax.random.PRNGKey(0), VP, model, (4, 2), sampler="ddim", num_steps=9, max_steps=8
        )
    ts = dc.time_grid(VP, 3, t_min=1e-2)
    with pytest.raises(
        ValueError, match=r"num_steps must be an integer in \[1, len\(ts\) - 1 = 3\]"
    ):
        dc.run_steps(None, dc.samplers.ddim(), VP, model, jnp.zeros((4, 2)), ts, num_steps=4)
    np.testing.assert_array_equal(  # t_min = 0: the named spacing itself ends at 0
        dc.time_grid(VP, 3, t_min=0.0, to_zero=True), dc.time_grid(VP, 3, t_min=0.0)
    )


@pytest.mark.parametrize("name", TO_ZERO)
def test_final_step_to_zero_costs_no_extra_evaluation(name):
    """N intervals, the last to t = 0: N evaluations (2N - 1 for the Heun-type samplers, whose
    last step is Euler/x0_hat), against N + 1 (2N + 1) with the separate final denoising."""
    model = MIX.model_fn(VP, "eps")
    n = 6
    two = dc.SAMPLERS.get(name)().evals_per_step == 2
    x, info = dc.sample(jax.random.PRNGKey(0), VP, model, (16, 2), sampler=name, num_steps=n)
    assert int(info["nfe"]) == (2 * n - 1 if two else n)
    assert bool(jnp.all(jnp.isfinite(x)))
    _, info = dc.sample(
        jax.random.PRNGKey(0), VP, model, (16, 2), sampler=name, num_steps=n, denoise=True
    )
    assert int(info["nfe"]) == (2 * n + 1 if two else n + 1)


def test_final_step_to_zero_is_the_denoised_state():
    """The step to sigma = 0 is x0_hat at the last nonzero time: the same samples as the old
    path with one interval fewer and the separate denoising (DPM-Solver++'s equivalence)."""
    model = MIX.model_fn(VP, "eps")
    x1 = VP.prior_sample(jax.random.PRNGKey(1), (64, 2))
    ts = dc.time_grid(VP, 7, t_min=2e-2, grid="logsnr", to_zero=True)
    for name in ("ddim", "dpm_solver_pp_2m", "dpm_solver_pp_3m"):
        # lower_order_final off: the N=6 grid of the old path would lower the order near its end.
        step = dc.SAMPLERS.get(name)() if name == "ddim" else dc.SAMPLERS.get(name)(False)
        x, info = dc.run_steps(None, step, VP, model, x1, ts)
        ref, ref_info = dc.run_steps(None, step, VP, model, x1, ts[:-1], denoise=True)
        np.testing.assert_allclose(x, ref, rtol=1e-5, atol=1e-5)
        assert int(info["nfe"]) == int(ref_info["nfe"]) == 7


@pytest.mark.parametrize(
    "step", [dc.samplers.ddim(), dc.samplers.edm_heun(), dc.samplers.dpm_solver_pp_2m()]
)
def test_deterministic_samplers_draw_no_random_numbers(step):
    model = MIX.model_fn(VP, "eps")
    ts = dc.time_grid(VP, 4, t_min=1e-2, t_max=VP.sde_t_max, grid="karras", to_zero=True)
    x1 = jnp.ones((4, 2))
    jaxpr = str(
        jax.make_jaxpr(lambda k: dc.run_steps(k, step, VP, model, x1, ts))(jax.random.PRNGKey(0))
    )
    assert "random_bits" not in jaxpr and "threefry" not in jaxpr
    # The key is not needed at all.
    x, _ = dc.run_steps(None, step, VP, model, x1, ts)
    y, _ = dc.run_steps(jax.random.PRNGKey(5), step, VP, model, x1, ts)
    np.testing.assert_array_equal(x, y)


def _gauss_flow_map(x1, t0, t1):
    """Exact PF-ODE map of N(M, S^2) data from time t0 to t1 (standardised value is constant)."""
    a0, s0, a1, s1 = VP.alpha(t0), VP.sigma(t0), VP.alpha(t1), VP.sigma(t1)
    xi = (x1 - a0 * M) / jnp.sqrt(a0**2 * S**2 + s0**2)
    return a1 * M + jnp.sqrt(a1**2 * S**2 + s1**2) * xi


def test_float64_end_to_end():
    """With x64 on, t, the grid and x stay float64: DPM-Solver++(3M) with 1000 steps reaches the
    closed-form flow map to 1e-8 (float32 rounding alone leaves more), and agrees with the
    float32 path to float32 accuracy."""
    x1 = np.random.default_rng(0).standard_normal((64, 2))
    step = dc.samplers.dpm_solver_pp_3m()
    with jax.enable_x64(True):
        ts = dc.time_grid(VP, 1000, t_min=1e-2, grid="logsnr")
        assert ts.dtype == jnp.float64
        model = GAUSS.model_fn(VP, "eps")
        x64 = jnp.asarray(x1, jnp.float64)
        x, _ = jax.jit(lambda x: dc.run_steps(None, step, VP, model, x, ts, denoise=False))(x64)
        assert x.dtype == jnp.float64
        ref = _gauss_flow_map(x64, 1.0, ts[-1])
        err64 = float(jnp.max(jnp.abs(x - ref)))
        samples, _ = dc.sample(
            jax.random.PRNGKey(0), VP, model, (8, 2), sampler="ddim", num_steps=5
        )
        assert samples.dtype == jnp.float64
    ts32 = dc.time_grid(VP, 1000, t_min=1e-2, grid="logsnr")
    assert ts32.dtype == jnp.float32
    model = GAUSS.model_fn(VP, "eps")
    x32, _ = dc.run_steps(None, step, VP, model, jnp.asarray(x1, jnp.float32), ts32, denoise=False)
    err32 = float(jnp.max(jnp.abs(x32 - ref.astype(jnp.float32))))
    assert err64 < 1e-8 and err32 > 10 * err64, (err64, err32)
    np.testing.assert_allclose(np.asarray(x32), np.asarray(x), rtol=0, atol=1e-4)


def test_compilation_cache_serves_a_fresh_process(tmp_path):
    """The second process loads the compiled sampler from the cache instead of compiling."""
    script = textwrap.dedent(
        f"""
        import jax, jax.numpy as jnp
        from diffax.core import enable_compilation_cache
        import diffax.continuous as dc
        hits = []
        jax.monitoring.register_event_listener(
            lambda e, **kw: hits.append(e) if e == "/jax/compilation_cache/cache_hits" else None
        )
        enable_compilation_cache({str(tmp_path)!r})
        gm = dc.GaussianMixture(jnp.ones(1), jnp.zeros((1, 2)), jnp.ones((1, 2)))
        f = jax.jit(lambda k: dc.sample(k, dc.VP(), gm.model_fn(dc.VP(), "eps"), (8, 2),
                                        sampler="dpm_solver_pp_2m", num_steps=5))
        jax.block_until_ready(f(jax.random.PRNGKey(0)))
        print("HITS", len(hits))
        """
    )
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    runs = [
        subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
        )
        for _ in range(2)
    ]
    for r in runs:
        assert r.returncode == 0, r.stderr[-2000:]
    first = int(runs[0].stdout.split("HITS")[-1])
    second = int(runs[1].stdout.split("HITS")[-1])
    assert first == 0 and second >= 1, (first, second)
    assert any(tmp_path.iterdir())


def test_compilation_cache_switches(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFAX_COMPILATION_CACHE", "off")
    assert enable_compilation_cache() is None
    assert enable_compilation_cache("") is None
    with pytest.raises(ValueError, match="min_compile_time_secs must be >= 0"):
        enable_compilation_cache(tmp_path, min_compile_time_secs=-1.0)
