"""Toy 2-D distributions: exact moments and densities, and the deterministic grain pipeline."""

import math

import numpy as np
import pytest

from diffax.data import (
    TOY_DISTRIBUTIONS,
    Checkerboard,
    GaussianGrid,
    GaussianRing,
    hashed_uniforms,
    toy_dataset,
    toy_distribution,
    toy_heldout,
)

NAMES = TOY_DISTRIBUTIONS.names()


def test_registry_names():
    assert NAMES == ["checkerboard", "gaussian_grid", "gaussian_ring", "swiss_roll", "two_moons"]
    with pytest.raises(ValueError, match="allowed values: checkerboard, gaussian_grid"):
        toy_distribution("spiral")


def test_hashed_uniforms_are_uniform_and_deterministic():
    u = hashed_uniforms(0, 0, np.arange(100_000), 2)
    assert u.min() > 0 and u.max() < 1
    assert abs(u.mean() - 0.5) < 0.005 and abs(u.var() - 1 / 12) < 0.002
    assert abs(np.corrcoef(u[:, 0], u[:, 1])[0, 1]) < 0.02
    np.testing.assert_array_equal(hashed_uniforms(0, 0, np.arange(5, 9), 2), u[5:9])
    assert not np.allclose(hashed_uniforms(1, 0, np.arange(4), 2), u[:4])
    assert not np.allclose(hashed_uniforms(0, 1, np.arange(4), 2), u[:4])


def test_closed_form_moments():
    ring = GaussianRing(num_modes=8, radius=2.0, std=0.15)
    np.testing.assert_allclose(ring.mean(), 0.0, atol=1e-12)
    np.testing.assert_allclose(ring.covariance(), (2.0 + 0.15**2) * np.eye(2), atol=1e-12)
    grid = GaussianGrid(size=5, spacing=0.8, std=0.08)
    var = 0.8**2 * (25 - 1) / 12 + 0.08**2
    np.testing.assert_allclose(grid.covariance(), var * np.eye(2), atol=1e-12)
    # Dark cells of an even board: per-axis variance of the whole square, correlation cell^2 / 4.
    board = Checkerboard(size=4, width=4.0)
    np.testing.assert_allclose(board.covariance(), [[4 / 3, 1 / 4], [1 / 4, 4 / 3]], atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_sample_moments_match_the_exact_ones(name):
    dist = toy_distribution(name)
    x = dist.sample(0, 40_000).astype(np.float64)
    assert x.shape == (40_000, 2)
    mean, cov = dist.mean(), dist.covariance()
    # 5 standard errors of the Monte-Carlo estimates.
    se_mean = np.sqrt(np.diag(cov) / len(x))
    assert np.all(np.abs(x.mean(0) - mean) < 5 * se_mean)
    centred = x - mean
    prods = centred[:, :, None] * centred[:, None, :]
    se_cov = prods.std(0) / np.sqrt(len(x))
    assert np.all(np.abs(prods.mean(0) - cov) < 5 * se_cov + 1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_density_integrates_to_one_and_matches_samples(name):
    dist = toy_distribution(name)
    g = -5.0 + (np.arange(100) + 0.5) * 0.1  # cell midpoints: no point on a checkerboard edge
    xx, yy = np.meshgrid(g, g)
    mass = np.exp(dist.log_prob(np.stack([xx.ravel(), yy.ravel()], -1))).sum() * 0.01
    assert abs(mass - 1) < 1e-3
    # Histogram of samples in a few boxes vs the density's mass there.
    x = dist.sample(1, 20_000)
    for lo in ([-1.0, -1.0], [0.5, -0.5], [-2.0, 0.5]):
        inside = np.all((x >= lo) & (x < np.add(lo, 0.5)), axis=1).mean()
        gx = lo[0] + (np.arange(25) + 0.5) * 0.02
        gy = lo[1] + (np.arange(25) + 0.5) * 0.02
        bx, by = np.meshgrid(gx, gy)
        p = np.exp(dist.log_prob(np.stack([bx.ravel(), by.ravel()], -1))).sum() * 4e-4
        assert abs(inside - p) < 5 * math.sqrt(max(p, 1e-4) / len(x)) + 0.005


def test_checkerboard_support():
    board = Checkerboard(size=4, width=4.0)
    x = board.sample(0, 1000)
    assert np.all(np.isfinite(board.log_prob(x)))
    np.testing.assert_allclose(board.log_prob(np.array([[-1.5, -1.5]])), -math.log(8.0))
    assert board.log_prob(np.array([[-1.5, -0.5], [3.0, 0.0]])).tolist() == [-np.inf, -np.inf]


def test_pipeline_is_deterministic_sharded_and_resumable():
    dist = toy_distribution("two_moons")
    it = iter(toy_dataset(dist, 8, seed=3))
    full = [next(it) for _ in range(3)]
    assert full[0].shape == (8, 2) and full[0].dtype == np.float32
    np.testing.assert_array_equal(np.concatenate(full), dist.sample(3, 24))
    # Two processes: each reads its block of every global batch.
    parts = [iter(toy_dataset(dist, 4, seed=3, shard_index=p, shard_count=2)) for p in range(2)]
    for k in range(3):
        np.testing.assert_array_equal(np.concatenate([next(p) for p in parts]), full[k])
    # The iterator state restores the position.
    it = iter(toy_dataset(dist, 8, seed=3))
    next(it)
    state = it.get_state()
    again = iter(toy_dataset(dist, 8, seed=3))
    again.set_state(state)
    np.testing.assert_array_equal(next(again), full[1])
    # Held-out data is a different stream.
    assert not np.isin(toy_heldout(dist, 24, seed=3), np.concatenate(full)).any()
