"""Sample-quality metrics against exact samples (used by the tests and the benchmark)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def sliced_wasserstein(
    key: jax.Array, x: jax.Array, y: jax.Array, num_projections: int = 256
) -> jax.Array:
    """Sliced 2-Wasserstein distance between two equal-size sample sets `[N, D]`.

    sqrt(E_theta W_2^2(theta^T x, theta^T y)) over directions theta uniform on the sphere; each
    1-D W_2 is computed exactly by sorting. Bonneel et al. 2015, Sliced and Radon Wasserstein
    Barycenters of Measures. Its Monte-Carlo floor for two independent exact sets is O(N^-1/2).
    """
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"x and y must both be [N, D] with equal shapes, got {x.shape}, {y.shape}")
    theta = jax.random.normal(key, (x.shape[1], num_projections))
    theta = theta / jnp.linalg.norm(theta, axis=0, keepdims=True)
    px = jnp.sort(x @ theta, axis=0)
    py = jnp.sort(y @ theta, axis=0)
    return jnp.sqrt(jnp.mean(jnp.square(px - py)))
