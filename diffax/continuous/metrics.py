"""Sample-quality metrics against exact samples (used by the tests and the benchmark)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def sliced_wasserstein(
    key: jax.Array, x: jax.Array, y: jax.Array, num_projections: int = 256, *, p: int = 2
) -> jax.Array:
    """Sliced p-Wasserstein distance between two equal-size sample sets `[N, D]`.

    `(E_theta W_p^p(theta^T x, theta^T y))^(1/p)` over directions theta uniform on the sphere;
    each 1-D W_p is computed exactly by sorting. p = 2 (default) or p = 1 (the sliced W1 of the
    sampler benchmark). Bonneel et al. 2015, Sliced and Radon Wasserstein Barycenters of
    Measures. Its Monte-Carlo floor for two independent exact sets is O(N^-1/2).
    """
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"x and y must both be [N, D] with equal shapes, got {x.shape}, {y.shape}")
    if p not in (1, 2):
        raise ValueError(f"p must be 1 or 2, got {p!r}")
    theta = jax.random.normal(key, (x.shape[1], num_projections), x.dtype)
    theta = theta / jnp.linalg.norm(theta, axis=0, keepdims=True)
    px = jnp.sort(x @ theta, axis=0)
    py = jnp.sort(y @ theta, axis=0)
    if p == 1:
        return jnp.mean(jnp.abs(px - py))
    return jnp.sqrt(jnp.mean(jnp.square(px - py)))
