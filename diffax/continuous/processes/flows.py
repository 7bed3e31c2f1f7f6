"""Interpolation paths that reach pure noise at t = 1 (alpha(1) = 0): RectifiedFlow, Cosine.

The reverse SDE of such a path is singular at t = 1, so SDE samplers start at `sde_t_max` = 0.99.
"""

from __future__ import annotations

import math
from typing import ClassVar

import jax
import jax.numpy as jnp

from diffax.continuous.processes.base import PROCESSES, GaussianProcess, as_time
from diffax.core import pytree_dataclass
from diffax.core.arrays import TINY, float_dtype


@PROCESSES.register("rectified_flow")
@pytree_dataclass
class RectifiedFlow(GaussianProcess):
    """Linear interpolation alpha = 1 - t, sigma = t.

    Liu et al. 2023, Flow Straight and Fast; Lipman et al. 2023, Flow Matching. alpha(1) = 0, so
    f and g are infinite at t = 1 (floored to finite) and SDE samplers start at `sde_t_max` = 0.99
    (logSNR ~ -9.2, close to VP-linear's logSNR(1) ~ -10).
    """

    sde_t_max: ClassVar[float] = 0.99

    def alpha(self, t):
        return 1.0 - as_time(t)

    def sigma(self, t):
        return as_time(t)

    def f(self, t):
        return -1.0 / jnp.maximum(self.alpha(t), TINY)

    def g2(self, t):
        t = as_time(t)
        return 2.0 * t / jnp.maximum(1.0 - t, TINY)

    def alpha_sigma_dt(self, t):
        t = as_time(t)
        return -jnp.ones_like(t), jnp.ones_like(t)

    def t_from_log_snr(self, log_snr):
        return jax.nn.sigmoid(-0.5 * jnp.asarray(log_snr, dtype=float_dtype()))


@PROCESSES.register("cosine")
@pytree_dataclass
class Cosine(GaussianProcess):
    """Trigonometric path alpha = cos(pi t/2), sigma = sin(pi t/2).

    Nichol & Dhariwal 2021 (s = 0); Albergo & Vanden-Eijnden 2023, Stochastic Interpolants.
    alpha is computed as sin(pi (1 - t)/2) so that alpha(1) = 0 exactly in float32. Like
    RectifiedFlow, the reverse SDE is singular at t = 1 and `sde_t_max` = 0.99.
    """

    sde_t_max: ClassVar[float] = 0.99

    def alpha(self, t):
        return jnp.sin(0.5 * math.pi * (1.0 - as_time(t)))

    def sigma(self, t):
        return jnp.sin(0.5 * math.pi * as_time(t))

    def f(self, t):
        return -0.5 * math.pi * self.sigma(t) / jnp.maximum(self.alpha(t), TINY)

    def g2(self, t):
        return math.pi * self.sigma(t) / jnp.maximum(self.alpha(t), TINY)

    def alpha_sigma_dt(self, t):
        t = as_time(t)
        return -0.5 * math.pi * self.sigma(t), 0.5 * math.pi * self.alpha(t)

    def t_from_log_snr(self, log_snr):
        lam = jnp.asarray(log_snr, dtype=float_dtype())
        return jnp.clip(jnp.arctan(jnp.exp(-0.5 * lam)) / (0.5 * math.pi), 0.0, 1.0)
