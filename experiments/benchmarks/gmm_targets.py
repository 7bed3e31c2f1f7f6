"""The Gaussian-mixture targets of the sampler benchmarks, as plain NumPy arrays.

NumPy only, so that the side-by-side scripts run against PyTorch samplers (diffusers,
k-diffusion, in a separate environment) build exactly the same mixtures as the JAX benchmark.
Each target is `(weights [K], means [K, D], scales [K, D])` of `sum_k w_k N(mu_k, diag(s_k^2))`.
"""

from __future__ import annotations

import numpy as np


def mixture_2d() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Four unequal, anisotropic components in 2-D (well separated, narrowest scale 0.15)."""
    weights = np.array([0.4, 0.3, 0.2, 0.1])
    means = np.array([[-1.5, -1.0], [1.5, -1.0], [0.0, 1.5], [1.8, 1.6]])
    scales = np.array([[0.35, 0.2], [0.2, 0.4], [0.5, 0.25], [0.15, 0.15]])
    return weights, means, scales


def mixture_64d(seed: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eight components in 64-D: softmax weights, N(0, 1) means, scales uniform in [0.2, 0.6]."""
    rng = np.random.default_rng(seed)
    logits = 0.5 * rng.standard_normal(8)
    weights = np.exp(logits) / np.exp(logits).sum()
    means = rng.standard_normal((8, 64))
    scales = rng.uniform(0.2, 0.6, size=(8, 64))
    return weights, means, scales


TARGETS = {"2d": mixture_2d, "64d": mixture_64d}
