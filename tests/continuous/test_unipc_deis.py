"""UniPC and DEIS against exact answers: the order of convergence on the closed-form PF-ODE map of
Gaussian data, equality with diffusers 0.42.1 (`UniPCMultistepScheduler`,
`DEISMultistepScheduler`) on identical float64 grids (stored numbers, made by
experiments/benchmarks/peers/make_unipc_reference.py), NFE and finiteness down to t = 0, and
argument errors."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffax.continuous as dc
from diffax.continuous.samplers import deis, unipc

from .conftest import ALL_PROCESSES

VP = dc.VP()
M, S = 1.5, 0.5  # Gaussian target N(M, S^2) per dimension
GAUSS = dc.GaussianMixture(jnp.ones(1), jnp.full((1, 2), M), jnp.full((1, 2), S))
T_MIN = 1e-3
REFERENCE = pathlib.Path(__file__).parent / "data" / "diffusers_unipc_deis_reference.npz"


def _exact_flow_map(x1):
    """x at T_MIN on the PF-ODE through x1 at t = 1: for Gaussian data the standardized value
    (x_t - alpha m)/std_t is constant along it."""
    a1, s1 = VP.alpha(1.0), VP.sigma(1.0)
    xi = (x1 - a1 * M) / jnp.sqrt(a1**2 * S**2 + s1**2)
    a, s = VP.alpha(T_MIN), VP.sigma(T_MIN)
    return a * M + jnp.sqrt(a**2 * S**2 + s**2) * xi


# (name, factory, theoretical global order). UniPC-p with its corrector has order p + 1
# (Zhao et al. 2023, Theorem 3.1: UniC-p raises the order of any p-th order predictor by one);
# UniP-p alone and DEIS tAB-p have order p. On this target the third-order multistep
# formulas (UniP-3, DEIS-3, like DPM-Solver++(3M)) measure ~4: a lower bound is asserted.
ORDER_CASES = [
    ("unipc1_bh1", lambda: unipc(1, "bh1", lower_order_final=False), 2),
    ("unipc1_bh2", lambda: unipc(1, "bh2", lower_order_final=False), 2),
    ("unipc2_bh1", lambda: unipc(2, "bh1", lower_order_final=False), 3),
    ("unipc2_bh2", lambda: unipc(2, "bh2", lower_order_final=False), 3),
    ("unipc3_bh2", lambda: unipc(3, "bh2", lower_order_final=False), 4),
    ("unip1", lambda: unipc(1, corrector=False, lower_order_final=False), 1),
    ("unip2", lambda: unipc(2, corrector=False, lower_order_final=False), 2),
    ("unip3", lambda: unipc(3, corrector=False, lower_order_final=False), 3),
    ("deis1", lambda: deis(1, lower_order_final=False), 1),
    ("deis2", lambda: deis(2, lower_order_final=False), 2),
    ("deis3", lambda: deis(3, lower_order_final=False), 3),
]


@pytest.mark.parametrize("name,factory,order", ORDER_CASES, ids=[c[0] for c in ORDER_CASES])
def test_order_of_convergence_on_the_gaussian_flow_map(name, factory, order):
    """Global error at T_MIN (no denoising) with 96 and 192 logSNR-uniform steps, in float64.

    `lower_order_final=False`: a first-order last step would cap every order at 2. UniPC-3's
    error reaches its asymptotic rate only past ~100 steps (measured 1.6, 3.5, 3.8, 3.9 between
    24, 48, ..., 384 steps), hence the long grids.
    """
    step = factory()
    with jax.enable_x64(True):
        x1 = VP.sigma(1.0) * jax.random.normal(jax.random.PRNGKey(0), (64, 2), jnp.float64)
        ref = _exact_flow_map(x1)
        model = GAUSS.model_fn(VP, "eps")
        errors = []
        for n in (96, 192):
            ts = dc.time_grid(VP, n, t_min=T_MIN, grid="logsnr")
            x, info = dc.run_steps(None, step, VP, model, x1, ts, denoise=False)
            assert x.dtype == jnp.float64 and int(info["nfe"]) == n
            errors.append(float(jnp.sqrt(jnp.mean((x - ref) ** 2))))
    measured = np.log2(errors[0] / errors[1])
    assert errors[1] < 1e-2, errors
    assert measured > order - 0.3, f"{name}: errors {errors}, order {measured:.2f} (theory {order})"


def _reference_cases():
    if not REFERENCE.exists():
        return []
    with np.load(REFERENCE) as ref:
        return sorted(k[len("out_") :] for k in ref.files if k.startswith("out_"))


@pytest.mark.parametrize("case", _reference_cases())
def test_equals_diffusers_on_identical_float64_grids(case):
    """diffax's sampler on diffusers' grid (half-logSNR values mapped to VP times) from the same
    start, with the exact eps of the same 3-component mixture, equals diffusers 0.42.1 to 1e-10.

    Cases: `unipc_{bh1|bh2}_{order}_{grid}_{lof|full}` and `deis_{order}_{grid}_lof`, grids
    "tmin10"/"tmin16" (ending at rho = sigma/alpha > 0) and "zero10" (ending at rho = 0). Not
    comparable, because diffusers returns NaN: UniPC bh1 and DEIS on grids ending at 0.
    """
    with np.load(REFERENCE) as ref:
        data = {k: ref[k] for k in ref.files}
    assert str(data["diffusers_version"]) == "0.42.1"
    kind, *rest = case.split("_")
    grid, lower = rest[-2], rest[-1] == "lof"
    if kind == "unipc":
        step = unipc(int(rest[1]), rest[0], lower_order_final=lower)
    else:
        step = deis(int(rest[0]), lower_order_final=lower)
    with jax.enable_x64(True):
        # Built inside the x64 context: outside it these arrays would be float32.
        mixture = dc.GaussianMixture(
            jnp.array([0.5, 0.3, 0.2]),
            jnp.array([[1.5, -0.5], [-1.0, 1.0], [0.0, -2.0]]),
            jnp.array([[0.3, 0.5], [0.6, 0.2], [0.4, 0.4]]),
        )
        lam = jnp.asarray(data[f"lam_{grid}"])
        ts = VP.t_from_log_snr(2.0 * lam)  # lam = +inf -> t = 0
        finite = np.isfinite(data[f"lam_{grid}"])
        np.testing.assert_allclose(0.5 * VP.log_snr(ts)[finite], lam[finite], rtol=0, atol=1e-13)
        model = mixture.model_fn(VP, "eps")
        x, info = dc.run_steps(None, step, VP, model, jnp.asarray(data["x_start"]), ts)
        assert x.dtype == jnp.float64 and int(info["nfe"]) == len(lam) - 1
    want = data[f"out_{case}"]
    error = np.max(np.abs(np.asarray(x) - want)) / np.max(np.abs(want))
    assert error < 1e-10, f"{case}: max relative difference {error:.2e}"


NAN_PROCESSES = ["vp", "ve", "edm", "rectified_flow"]


@pytest.mark.parametrize("process_name", NAN_PROCESSES)
def test_exact_nfe_and_finite_down_to_t_zero(process_name, ring_mixture):
    """The default grid of `sample` ends at t = 0 (sigma = 0 on VP and RectifiedFlow): N
    intervals cost N evaluations, and the highest orders without `lower_order_final` stay
    finite (UniPC's step to sigma = 0 is first order; DEIS's is the finite limit)."""
    process = ALL_PROCESSES[process_name]
    model = ring_mixture.model_fn(process, "eps")
    for sampler, options in (
        ("unipc", {"order": 3, "variant": "bh1", "lower_order_final": False}),
        ("unipc", {"order": 2}),
        ("deis", {"order": 3, "lower_order_final": False}),
    ):
        x, info = dc.sample(
            jax.random.PRNGKey(0), process, model, (16, 2), sampler=sampler, num_steps=4, **options
        )
        assert int(info["nfe"]) == 4, (sampler, options)
        assert np.all(np.isfinite(x)), (sampler, options)


@pytest.mark.parametrize("process_name", ["vp", "rectified_flow"])
def test_float64_down_to_t_zero(process_name, ring_mixture):
    """With x64 on, `sample` stays float64 to t = 0 and the last step (sigma = 0) is finite."""
    process = ALL_PROCESSES[process_name]
    with jax.enable_x64(True):
        model = ring_mixture.model_fn(process, "eps")
        for sampler in ("unipc", "deis"):
            x, info = dc.sample(
                jax.random.PRNGKey(0), process, model, (16, 2), sampler=sampler, num_steps=3
            )
            assert x.dtype == jnp.float64 and int(info["nfe"]) == 3, sampler
            assert np.all(np.isfinite(x)), sampler


def test_padded_grid_repeats_are_identity_steps(ring_mixture):
    """A grid padded with repeated final times (a `max_steps` bucket) gives the same samples:
    the repeated steps are the identity and the last-step order lowering counts real steps."""
    model = ring_mixture.model_fn(VP, "eps")
    ts = jnp.append(dc.time_grid(VP, 4, t_min=T_MIN, grid="logsnr"), 0.0)
    padded = jnp.concatenate([ts, jnp.full((3,), ts[-1])])
    x1 = jax.random.normal(jax.random.PRNGKey(0), (16, 2))
    for step in (unipc(3, "bh1"), deis(3)):
        x, _ = dc.run_steps(None, step, VP, model, x1, ts, denoise=False)
        x_pad, _ = dc.run_steps(None, step, VP, model, x1, padded, denoise=False)
        np.testing.assert_array_equal(np.asarray(x_pad), np.asarray(x))


@pytest.mark.parametrize(
    "factory,kwargs,match",
    [
        (unipc, {"order": 4}, "order must be 1, 2 or 3"),
        (unipc, {"order": 0}, "order must be 1, 2 or 3"),
        (unipc, {"order": True}, "order must be 1, 2 or 3"),
        (unipc, {"variant": "bh3"}, "variant must be one of"),
        (deis, {"order": 4}, "order must be 1, 2 or 3"),
        (deis, {"order": 2.0}, "order must be 1, 2 or 3"),
    ],
)
def test_argument_errors(factory, kwargs, match):
    with pytest.raises(ValueError, match=match):
        factory(**kwargs)


def test_argument_errors_through_sample(ring_mixture):
    model = ring_mixture.model_fn(VP, "eps")
    with pytest.raises(ValueError, match="variant must be one of"):
        dc.sample(
            jax.random.PRNGKey(0), VP, model, (4, 2), sampler="unipc", num_steps=3, variant="x"
        )
