"""Noise schedules of the variance-preserving process, as objects.

A VP schedule fixes `log alpha(t)` (0 at t = 0, decreasing); the VP process derives everything
else from it: `sigma^2 = 1 - alpha^2`, the drift `f = -beta/2` and diffusion `g^2 = beta` with
`beta(t) = -2 d log alpha/dt` (Song et al. 2021, Score-Based Generative Modeling through SDEs).

A schedule provides three methods, all elementwise on float32 `t` of any shape:

* `log_alpha(t)`: log alpha(t) <= 0;
* `beta(t)`: -2 d log alpha / dt >= 0;
* `t_from_log_snr(log_snr)`: the t with logSNR(t) = 2 log alpha - log(1 - alpha^2) = log_snr.

Subclass `VPSchedule` and define `log_alpha` only: `beta` then comes from forward-mode autodiff and
`t_from_log_snr` from bisection; the built-in schedules give both in closed form. Schedules are
frozen pytree dataclasses (their numbers are leaves, so they can be traced), registered by name in
`SCHEDULES` for configs: `VP(schedule="cosine")` looks the name up once, at construction.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from diffax.continuous.processes.base import check_positive, invert_log_snr
from diffax.core import Registry, pytree_dataclass
from diffax.core.arrays import TINY, float_dtype
from diffax.core.validation import check_number, check_ordered, is_number

SCHEDULES: Registry[type] = Registry("VP schedule")


class VPSchedule:
    """Base class of VP schedules: define `log_alpha`; `beta` and `t_from_log_snr` follow."""

    def log_alpha(self, t: jax.Array) -> jax.Array:
        """log alpha(t) (<= 0, 0 at t = 0). `t`: float32, any shape."""
        raise NotImplementedError

    def beta(self, t: jax.Array) -> jax.Array:
        """beta(t) = -2 d log alpha/dt (forward-mode autodiff of `log_alpha`). `t`: any shape."""
        t = jnp.asarray(t, float_dtype())
        _, dlog_alpha = jax.jvp(self.log_alpha, (t,), (jnp.ones_like(t),))
        return -2.0 * dlog_alpha

    def t_from_log_snr(self, log_snr: jax.Array) -> jax.Array:
        """The t in [0, 1] at which logSNR(t) = `log_snr` (bisection). Any shape."""

        def log_snr_fn(t):
            log_alpha = self.log_alpha(t)
            sigma2 = jnp.maximum(-jnp.expm1(2.0 * log_alpha), TINY * TINY)
            return 2.0 * log_alpha - jnp.log(sigma2)

        return invert_log_snr(log_snr_fn, log_snr)


def check_vp_schedule(schedule: object, argument: str = "schedule") -> None:
    """Raises `TypeError` unless `schedule` has callable `log_alpha`, `beta`, `t_from_log_snr`."""
    methods = ("log_alpha", "beta", "t_from_log_snr")
    missing = [m for m in methods if not callable(getattr(schedule, m, None))]
    if missing:
        raise TypeError(
            f"{argument} must be a VP schedule object (e.g. LinearBeta(), CosineSchedule(), or a "
            f"VPSchedule subclass) or one of the names {', '.join(SCHEDULES.names())}; got "
            f"{schedule!r}, which lacks {', '.join(missing)}"
        )


@SCHEDULES.register("linear")
@pytree_dataclass
class LinearBeta(VPSchedule):
    """beta(t) = beta_min + t (beta_max - beta_min), log alpha = -B(t)/2, B(t) = int_0^t beta.

    Ho et al. 2020, DDPM; Song et al. 2021, SDEs. Checked on construction (Python/NumPy numbers
    only): 0 < beta_min <= beta_max < inf.
    """

    beta_min: float = 0.1
    beta_max: float = 20.0

    def __post_init__(self):
        check_positive(beta_min=self.beta_min, beta_max=self.beta_max)
        check_ordered(self.beta_min, "beta_min", self.beta_max, "beta_max", strict=False)

    def log_alpha(self, t: jax.Array) -> jax.Array:
        """-B(t)/2 = -(beta_min t + (beta_max - beta_min) t^2 / 2) / 2."""
        return -0.5 * (self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t * t)

    def beta(self, t: jax.Array) -> jax.Array:
        """beta_min + t (beta_max - beta_min)."""
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def t_from_log_snr(self, log_snr: jax.Array) -> jax.Array:
        """Closed form: B(t) = log(1 + exp(-logSNR)), solved for t (stable quadratic root)."""
        lam = jnp.asarray(log_snr, dtype=float_dtype())
        b = jax.nn.softplus(-lam)
        db = self.beta_max - self.beta_min
        return 2.0 * b / (self.beta_min + jnp.sqrt(self.beta_min**2 + 2.0 * db * b))


@SCHEDULES.register("cosine")
@pytree_dataclass
class CosineSchedule(VPSchedule):
    """alpha(t) = cos(phi(t)) / cos(phi(0)), phi(t) = (t t_max + s)/(1 + s) pi/2.

    Nichol & Dhariwal 2021, Improved DDPM. `t_max` < 1 keeps alpha(1) > 0 (0.9946 as in
    DPM-Solver; alpha(1) ~ 0.0084). Checked on construction (Python/NumPy numbers only):
    0 < s < inf, 0 < t_max < 1 (by more than float32 rounding).
    """

    s: float = 0.008
    t_max: float = 0.9946

    def __post_init__(self):
        check_positive(s=self.s)
        # phi(1) = (t_max + s) / (1 + s) pi / 2 must stay below pi / 2 (alpha(1) > 0; t_max >= 1
        # gives cos(phi(1)) <= 0 and a NaN log alpha), also after rounding to float32.
        check_number(self.t_max, "t_max", low=0.0, high=1.0)
        if is_number(self.t_max) and is_number(self.s):
            t_max, c_s = np.float32(self.t_max), np.float32(self.s)
            phi1 = (t_max + c_s) / (np.float32(1.0) + c_s) * np.float32(math.pi / 2)
            if not np.cos(phi1) > 0:
                raise ValueError(
                    f"t_max must be < 1 by more than float32 rounding (alpha(1) = "
                    f"cos(phi(1)) / cos(phi(0)) must be > 0); got {self.t_max}"
                )

    def _phi(self, t):
        return (t * self.t_max + self.s) / (1.0 + self.s) * (math.pi / 2)

    def log_alpha(self, t: jax.Array) -> jax.Array:
        """log(cos(phi(t)) / cos(phi(0))), without cancellation at small t."""
        # log(cos(phi0 + d) / cos(phi0)) = log1p(-2 sin^2(d/2) - tan(phi0) sin(d)), d = phi - phi0:
        # the plain difference of logs cancels to 0 for t < ~1e-5 in float32 (sigma(t) = 0).
        d = t * (self.t_max / (1.0 + self.s) * (math.pi / 2))
        small = d < 0.5
        ds = jnp.where(small, d, 0.0)
        near = jnp.log1p(-2.0 * jnp.sin(0.5 * ds) ** 2 - jnp.tan(self._phi(0.0)) * jnp.sin(ds))
        far = jnp.log(jnp.cos(self._phi(jnp.where(small, 1.0, t)))) - jnp.log(
            jnp.cos(self._phi(0.0))
        )
        return jnp.where(small, near, far)

    def beta(self, t: jax.Array) -> jax.Array:
        """2 tan(phi(t)) dphi/dt."""
        dphi = self.t_max / (1.0 + self.s) * (math.pi / 2)
        return 2.0 * jnp.tan(self._phi(t)) * dphi

    def t_from_log_snr(self, log_snr: jax.Array) -> jax.Array:
        """Closed form through sin^2 phi = 1 - sigmoid(logSNR) cos^2 phi(0)."""
        lam = jnp.asarray(log_snr, dtype=float_dtype())
        # Written without cancellation for large logSNR.
        sin2 = jax.nn.sigmoid(-lam) + jax.nn.sigmoid(lam) * jnp.sin(self._phi(0.0)) ** 2
        phi = jnp.arcsin(jnp.sqrt(jnp.clip(sin2, 0.0, 1.0)))
        return (phi / (math.pi / 2) * (1.0 + self.s) - self.s) / self.t_max
