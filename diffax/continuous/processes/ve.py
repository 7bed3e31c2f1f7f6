"""Processes with alpha = 1 (variance exploding): VE (geometric sigma) and EDM (linear sigma)."""

from __future__ import annotations

import jax.numpy as jnp

from diffax.continuous.processes.base import PROCESSES, GaussianProcess, as_time, check_positive
from diffax.core import pytree_dataclass
from diffax.core.arrays import float_dtype
from diffax.core.validation import check_ordered


@PROCESSES.register("ve")
@pytree_dataclass
class VE(GaussianProcess):
    """Variance-exploding process: alpha = 1, sigma = sigma_min (sigma_max/sigma_min)^t.

    Song & Ermon 2019, NCSN; Song et al. 2021, SDEs. Note sigma(0) = sigma_min > 0.
    Checked on construction: 0 < sigma_min < sigma_max < inf.
    """

    sigma_min: float = 0.01
    sigma_max: float = 50.0

    def __post_init__(self):
        check_positive(sigma_min=self.sigma_min, sigma_max=self.sigma_max)
        check_ordered(self.sigma_min, "sigma_min", self.sigma_max, "sigma_max")

    def _log_ratio(self):
        return jnp.log(self.sigma_max) - jnp.log(self.sigma_min)

    def alpha(self, t):
        return jnp.ones_like(as_time(t))

    def log_alpha(self, t):
        return jnp.zeros_like(as_time(t))

    def log_sigma(self, t):
        return jnp.log(self.sigma_min) + as_time(t) * self._log_ratio()

    def sigma(self, t):
        return jnp.exp(self.log_sigma(t))

    def f(self, t):
        return jnp.zeros_like(as_time(t))

    def g2(self, t):
        return 2.0 * self._log_ratio() * self.sigma(t) ** 2

    def alpha_sigma_dt(self, t):
        t = as_time(t)
        return jnp.zeros_like(t), self.sigma(t) * self._log_ratio()

    def t_from_log_snr(self, log_snr):
        lam = jnp.asarray(log_snr, dtype=float_dtype())
        return jnp.clip((-0.5 * lam - jnp.log(self.sigma_min)) / self._log_ratio(), 0.0, 1.0)


@PROCESSES.register("edm")
@pytree_dataclass
class EDM(GaussianProcess):
    """EDM process: alpha = 1, sigma = sigma_min + t (sigma_max - sigma_min).

    Karras et al. 2022, Elucidating the Design Space of Diffusion-Based Generative Models.
    Checked on construction: 0 < sigma_min < sigma_max < inf.
    """

    sigma_min: float = 0.002
    sigma_max: float = 80.0

    def __post_init__(self):
        check_positive(sigma_min=self.sigma_min, sigma_max=self.sigma_max)
        check_ordered(self.sigma_min, "sigma_min", self.sigma_max, "sigma_max")

    def alpha(self, t):
        return jnp.ones_like(as_time(t))

    def log_alpha(self, t):
        return jnp.zeros_like(as_time(t))

    def sigma(self, t):
        return self.sigma_min + as_time(t) * (self.sigma_max - self.sigma_min)

    def f(self, t):
        return jnp.zeros_like(as_time(t))

    def g2(self, t):
        return 2.0 * self.sigma(t) * (self.sigma_max - self.sigma_min)

    def alpha_sigma_dt(self, t):
        t = as_time(t)
        return jnp.zeros_like(t), jnp.full_like(t, self.sigma_max - self.sigma_min)

    def t_from_log_snr(self, log_snr):
        lam = jnp.asarray(log_snr, dtype=float_dtype())
        t = (jnp.exp(-0.5 * lam) - self.sigma_min) / (self.sigma_max - self.sigma_min)
        return jnp.clip(t, 0.0, 1.0)
