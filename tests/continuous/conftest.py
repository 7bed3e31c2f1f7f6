"""Shared fixtures: one instance of every process and a small 2-D Gaussian mixture."""

import jax.numpy as jnp
import pytest

import diffax.continuous as dc

ALL_PROCESSES = {
    "vp": dc.VP(),
    "vp_cosine": dc.VP(schedule="cosine"),
    "subvp": dc.SubVP(),
    "ve": dc.VE(),
    "edm": dc.EDM(),
    "rectified_flow": dc.RectifiedFlow(),
    "cosine": dc.Cosine(),
}


@pytest.fixture(scope="session")
def ring_mixture() -> dc.GaussianMixture:
    """8 isotropic components (std 0.3) on a circle of radius 2."""
    angles = jnp.linspace(0.0, 2.0 * jnp.pi, 9)[:-1]
    means = 2.0 * jnp.stack([jnp.cos(angles), jnp.sin(angles)], axis=1)
    return dc.GaussianMixture(
        weights=jnp.full((8,), 1 / 8), means=means, scales=jnp.full((8, 2), 0.3)
    )
