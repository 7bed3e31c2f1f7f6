"""`GaussianProcess`, the base of every continuous process, and the `PROCESSES` registry.

A process only supplies `alpha(t)` and `sigma(t)` (and, where cheaper or more accurate, closed
forms of their derivatives); the base class derives the drift, diffusion, logSNR, its inverse,
marginal and prior sampling from them (see the package docstring for the formulas and the
float32 edge behaviour).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from diffax.core import Registry, check_time
from diffax.core.arrays import TINY, expand_as, float_dtype, sum_event
from diffax.core.validation import check_number, is_number

# |logSNR| <= -2 log(TINY): then sigma/alpha = exp(-logSNR/2) lies in [TINY, 1/TINY].
LOG_SNR_BOUND = -2.0 * math.log(TINY)
_F32_MAX = float(np.finfo(np.float32).max)

PROCESSES: Registry[type] = Registry("process")


def as_time(t) -> jax.Array:
    """`t` (scalar or any shape) as float32, refusing concrete values outside [0, 1]."""
    check_time(t, "t")
    return jnp.asarray(t, dtype=float_dtype())


def check_positive(**values: float) -> None:
    """Raises `ValueError` naming the argument unless each value is a finite float32 > 0."""
    # Runs on construction with Python/NumPy numbers only; pytree unflattening passes tracers,
    # arrays or placeholders, which are not checked.
    for name, value in values.items():
        if is_number(value) and not value > 0:
            raise ValueError(f"{name} must be > 0, got {value}")
        check_number(value, name, low=0.0, float32=True)


def invert_log_snr(log_snr_fn: Callable[[jax.Array], jax.Array], log_snr) -> jax.Array:
    """The t in [0, 1] with `log_snr_fn(t) = log_snr` for a decreasing `log_snr_fn`.

    40 bisection steps (a fixed-length `fori_loop`, so it runs under `jit`); any shape.
    """
    lam = jnp.asarray(log_snr, dtype=float_dtype())

    def body(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        above = log_snr_fn(mid) > lam  # logSNR decreases with t: the root lies later.
        return jnp.where(above, mid, lo), jnp.where(above, hi, mid)

    lo, hi = jax.lax.fori_loop(0, 40, body, (jnp.zeros_like(lam), jnp.ones_like(lam)))
    return 0.5 * (lo + hi)


class GaussianProcess:
    """Base class: `x_t = alpha(t) x_0 + sigma(t) eps`. Subclasses define `alpha` and `sigma`.

    All methods take `t` as a scalar or an array of any shape (usually `[B]`) and act elementwise.
    """

    #: Largest time at which the reverse SDE is well defined (its diffusion is finite).
    sde_t_max: ClassVar[float] = 1.0

    def alpha(self, t) -> jax.Array:
        """Signal scale alpha(t)."""
        raise NotImplementedError

    def sigma(self, t) -> jax.Array:
        """Noise scale sigma(t)."""
        raise NotImplementedError

    def log_alpha(self, t) -> jax.Array:
        """log alpha(t), floored at log(TINY)."""
        return jnp.log(jnp.maximum(self.alpha(t), TINY))

    def log_sigma(self, t) -> jax.Array:
        """log sigma(t), floored at log(TINY)."""
        return jnp.log(jnp.maximum(self.sigma(t), TINY))

    def log_snr(self, t) -> jax.Array:
        """logSNR(t) = 2 log(alpha/sigma), decreasing in t, clipped to +-LOG_SNR_BOUND."""
        t = as_time(t)
        lam = 2.0 * (self.log_alpha(t) - self.log_sigma(t))
        return jnp.clip(lam, -LOG_SNR_BOUND, LOG_SNR_BOUND)

    def alpha_sigma_dt(self, t) -> tuple[jax.Array, jax.Array]:
        """(d alpha/dt, d sigma/dt); forward-mode autodiff unless a closed form is given."""
        t = as_time(t)
        one = jnp.ones_like(t)
        _, da = jax.jvp(self.alpha, (t,), (one,))
        _, ds = jax.jvp(self.sigma, (t,), (one,))
        return da, ds

    def f(self, t) -> jax.Array:
        """Drift coefficient f(t) = d log alpha/dt of the forward SDE `dx = f x dt + g dW`."""
        t = as_time(t)
        da, _ = self.alpha_sigma_dt(t)
        return da / jnp.maximum(self.alpha(t), TINY)

    def g2(self, t) -> jax.Array:
        """Squared diffusion g(t)^2 = d sigma^2/dt - 2 f sigma^2."""
        t = as_time(t)
        _, ds = self.alpha_sigma_dt(t)
        s = self.sigma(t)
        return jnp.maximum(2.0 * s * ds - 2.0 * self.f(t) * s * s, 0.0)

    def g(self, t) -> jax.Array:
        """Diffusion coefficient g(t)."""
        return jnp.sqrt(self.g2(t))

    def dlog_snr_dt(self, t) -> jax.Array:
        """d logSNR/dt = 2 (alpha'/alpha - sigma'/sigma) = -g(t)^2 / sigma(t)^2 (<= 0).

        Both terms are <= 0, so at an end where one is infinite the sum is -inf, never NaN; it is
        clipped to the most negative float32.
        """
        t = as_time(t)
        da, ds = self.alpha_sigma_dt(t)
        rate = da / jnp.maximum(self.alpha(t), TINY) - ds / jnp.maximum(self.sigma(t), TINY)
        return jnp.clip(2.0 * rate, -_F32_MAX, 0.0)

    def t_from_log_snr(self, log_snr) -> jax.Array:
        """Inverse of `log_snr`, clipped to [0, 1] (bisection unless a closed form is given)."""
        return invert_log_snr(self.log_snr, log_snr)

    def marginal_sample(self, key: jax.Array, x0: jax.Array, t) -> tuple[jax.Array, jax.Array]:
        """Draws `x_t ~ q(x_t | x_0)`.

        Args:
          key: PRNG key.
          x0: `[B, ...]` clean data.
          t: scalar or `[B]` times.

        Returns:
          `(x_t, eps)`, both `[B, ...]`, with `x_t = alpha(t) x0 + sigma(t) eps`.
        """
        t = as_time(t)
        eps = jax.random.normal(key, x0.shape, dtype=x0.dtype)
        return expand_as(self.alpha(t), x0) * x0 + expand_as(self.sigma(t), x0) * eps, eps

    def prior_sample(self, key: jax.Array, shape: tuple[int, ...], t: float = 1.0) -> jax.Array:
        """Draws `[*shape]` from the prior N(0, sigma(t)^2 I) at time t (default 1)."""
        return self.sigma(as_time(t)) * jax.random.normal(key, shape, dtype=float_dtype())

    def prior_log_prob(self, x: jax.Array, t: float = 1.0) -> jax.Array:
        """Log-density of `x: [B, ...]` under N(0, sigma(t)^2 I), in nats, `[B]`."""
        log_s = self.log_sigma(as_time(t))
        d = math.prod(x.shape[1:])
        sq = sum_event(jnp.square(x)) * jnp.exp(-2.0 * log_s)
        return -0.5 * sq - d * (log_s + 0.5 * math.log(2.0 * math.pi))
