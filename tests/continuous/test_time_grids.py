"""Time grids: endpoints, spacing in the quantity each one is uniform in, errors."""

import jax.numpy as jnp
import numpy as np
import pytest

import diffax.continuous as dc

from .conftest import ALL_PROCESSES


@pytest.mark.parametrize("grid", ["uniform", "logsnr", "karras", "quadratic"])
@pytest.mark.parametrize("name", ["vp", "ve", "rectified_flow", "edm"])
def test_grid_endpoints_and_order(grid, name):
    process = ALL_PROCESSES[name]
    ts = dc.time_grid(process, 12, t_min=1e-3, t_max=0.99, grid=grid)
    assert ts.shape == (13,) and ts.dtype == jnp.float32
    assert float(ts[0]) == pytest.approx(0.99) and float(ts[-1]) == pytest.approx(1e-3)
    assert np.all(np.diff(np.asarray(ts)) < 0)


def test_grid_spacings():
    vp = dc.VP()
    ts = dc.time_grid(vp, 10, t_min=1e-3, grid="logsnr")
    np.testing.assert_allclose(
        np.diff(np.asarray(vp.log_snr(ts))), (9.1506 + 10.05) / 10, rtol=2e-3
    )
    ts = dc.time_grid(vp, 10, t_min=1e-3, grid="karras", rho=7.0)
    s = np.exp(-0.5 * np.asarray(vp.log_snr(ts), np.float64)) ** (1 / 7)
    np.testing.assert_allclose(np.diff(s), np.diff(s)[0], rtol=1e-3)
    ts = dc.time_grid(vp, 4, t_min=0.2, grid="quadratic")
    np.testing.assert_allclose(ts, 0.2 + 0.8 * np.array([1, 9 / 16, 1 / 4, 1 / 16, 0]), rtol=1e-6)
    ts = dc.time_grid(vp, 4, t_min=0.2, grid="uniform")
    np.testing.assert_allclose(ts, [1.0, 0.8, 0.6, 0.4, 0.2], rtol=1e-6)


def test_grid_errors():
    vp = dc.VP()
    with pytest.raises(ValueError, match="num_steps must be an integer >= 1"):
        dc.time_grid(vp, 0, t_min=0.01)
    with pytest.raises(TypeError, match="num_steps"):
        dc.time_grid(vp, 2.5, t_min=0.01)
    with pytest.raises(ValueError, match="unknown time grid 'cubic'.*karras, logsnr"):
        dc.time_grid(vp, 4, t_min=0.01, grid="cubic")
    with pytest.raises(ValueError, match="t_min must be < t_max"):
        dc.time_grid(vp, 4, t_min=0.5, t_max=0.5)
    with pytest.raises(ValueError, match="t_max must lie in"):
        dc.time_grid(vp, 4, t_min=0.1, t_max=1.2)


@pytest.mark.parametrize("grid", ["logsnr", "karras"])
@pytest.mark.parametrize("name", ["rectified_flow", "cosine"])
def test_logsnr_grids_from_t_equal_one_on_paths_with_zero_alpha(grid, name):
    """logSNR(1) = -inf for these paths: spacing starts at sde_t_max, not at t ~ 1."""
    process = ALL_PROCESSES[name]
    ts = np.asarray(dc.time_grid(process, 10, t_min=1e-3, grid=grid))
    assert ts[0] == 1.0 and ts[-1] == pytest.approx(1e-3)
    assert np.all(np.diff(ts) < 0)
    assert ts[1] < process.sde_t_max  # not bunched at t = 1
    assert np.sum(ts > 0.99) == 1  # only t_max itself; before the fix all but t_min were
