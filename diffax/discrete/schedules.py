"""Noise schedules for discrete (CTMC) diffusion.

A schedule is the total noise sigma_bar(t) = int_0^t beta(s) ds of a CTMC with rate matrix
Q(t) = beta(t) Q_base. The probability that a token is untouched at time t is
alpha(t) = exp(-sigma_bar(t)); t = 0 is clean data and t = 1 is the prior.

Every schedule gives, in closed form and in float32:

* `alpha(t)` and `one_minus_alpha(t)` (the latter without cancellation at small t),
* `dalpha(t)` = d alpha / dt (<= 0),
* `total_noise(t)` = sigma_bar(t) and `rate(t)` = beta(t) = -alpha'(t) / alpha(t),
* `masking_rate(t)` = -alpha'(t) / (1 - alpha(t)), the weight of the masked ELBO,
* `inverse_alpha(a)`: the time at which alpha(t) = a (used by the first-hitting sampler).

Schedules are frozen pytree dataclasses whose parameters are static (hashable) numbers, so a
process holding a schedule is a compile-time constant under `jit`.
"""

from __future__ import annotations

import math
from typing import Protocol

import jax
import jax.numpy as jnp

from diffax.core import Registry, pytree_dataclass, static_field
from diffax.core.validation import check_number, check_ordered

SCHEDULES: Registry = Registry("schedule")
schedules = SCHEDULES  # the lower-case name from before the registries were renamed


def _f32(t: jax.Array) -> jax.Array:
    return jnp.asarray(t, jnp.float32)


class Schedule(Protocol):
    """What processes and samplers need from a schedule (all inputs `t`: any shape, float)."""

    def alpha(self, t: jax.Array) -> jax.Array: ...

    def one_minus_alpha(self, t: jax.Array) -> jax.Array: ...

    def dalpha(self, t: jax.Array) -> jax.Array: ...

    def total_noise(self, t: jax.Array) -> jax.Array: ...

    def rate(self, t: jax.Array) -> jax.Array: ...

    def masking_rate(self, t: jax.Array) -> jax.Array: ...

    def inverse_alpha(self, a: jax.Array) -> jax.Array: ...

    def alpha_at(self, t: float) -> float:
        """alpha(t) at a Python float `t`, as a Python float (for checks made on the host)."""
        ...


_SCHEDULE_METHODS = (
    "alpha",
    "one_minus_alpha",
    "dalpha",
    "total_noise",
    "rate",
    "masking_rate",
    "inverse_alpha",
    "alpha_at",
)


def check_schedule(schedule: object, argument: str = "schedule") -> None:
    """Raises `TypeError` unless `schedule` provides the `Schedule` methods (and `alpha_at`)."""
    missing = [m for m in _SCHEDULE_METHODS if not callable(getattr(schedule, m, None))]
    if missing:
        raise TypeError(
            f"{argument} must be a schedule object (e.g. LinearSchedule(); registered names: "
            f"{', '.join(SCHEDULES.names())}), got {schedule!r} without {', '.join(missing)}"
        )


class _ScheduleMethods:
    """Methods every schedule derives from `alpha`, `one_minus_alpha` and `dalpha`."""

    def total_noise(self, t: jax.Array) -> jax.Array:
        """sigma_bar(t) = -log alpha(t)."""
        return -jnp.log(self.alpha(t))

    def rate(self, t: jax.Array) -> jax.Array:
        """beta(t) = d sigma_bar / dt = -alpha'(t) / alpha(t)."""
        return -self.dalpha(t) / self.alpha(t)

    def masking_rate(self, t: jax.Array) -> jax.Array:
        """-alpha'(t) / (1 - alpha(t)): the rate at which a masked token is revealed in reverse."""
        return -self.dalpha(t) / self.one_minus_alpha(t)

    def alpha_at(self, t: float) -> float:
        """alpha at a Python float time, as a Python float (for static checks, also under jit)."""
        with jax.ensure_compile_time_eval():
            return float(self.alpha(jnp.float32(t)))


@SCHEDULES.register("linear")
@pytree_dataclass
class LinearSchedule(_ScheduleMethods):
    """alpha(t) = 1 - t, so sigma_bar(t) = -log(1 - t) and beta(t) = 1 / (1 - t).

    alpha(0) = 1 and alpha(1) = 0: the prior is reached exactly.
    Reference: Sahoo et al. 2024 (MDLM); Shi et al. 2024 (MD4), the linear schedule.
    """

    def alpha(self, t: jax.Array) -> jax.Array:
        """Probability that a token still holds its clean value at time t. `t`: any shape."""
        return 1.0 - _f32(t)

    def one_minus_alpha(self, t: jax.Array) -> jax.Array:
        """1 - alpha(t) = t."""
        return _f32(t)

    def dalpha(self, t: jax.Array) -> jax.Array:
        """d alpha / dt = -1."""
        return -jnp.ones_like(_f32(t))

    def total_noise(self, t: jax.Array) -> jax.Array:
        """sigma_bar(t) = -log(1 - t) (infinite at t = 1)."""
        return -jnp.log1p(-_f32(t))

    def rate(self, t: jax.Array) -> jax.Array:
        """beta(t) = 1 / (1 - t) (infinite at t = 1)."""
        return 1.0 / (1.0 - _f32(t))

    def masking_rate(self, t: jax.Array) -> jax.Array:
        """-alpha' / (1 - alpha) = 1 / t."""
        return 1.0 / _f32(t)

    def inverse_alpha(self, a: jax.Array) -> jax.Array:
        """t with alpha(t) = a."""
        return 1.0 - _f32(a)


@SCHEDULES.register("cosine")
@pytree_dataclass
class CosineSchedule(_ScheduleMethods):
    """alpha(t) = 1 - cos(pi/2 (1 - t)) = 2 sin^2(u / 2) with u = pi/2 (1 - t).

    Written through u so that alpha and beta stay accurate next to t = 1 (where alpha -> 0).
    alpha(0) = 1, alpha(1) = 0.
    Reference: Shi et al. 2024 (MD4), the cosine schedule; Chang et al. 2022 (MaskGIT).
    """

    def _u(self, t: jax.Array) -> jax.Array:
        return 0.5 * math.pi * (1.0 - _f32(t))

    def alpha(self, t: jax.Array) -> jax.Array:
        """1 - sin(pi t / 2) for t < 1/2 (exactly 1 at t = 0), 2 sin^2(u / 2) otherwise."""
        t = _f32(t)
        return jnp.where(
            t < 0.5, 1.0 - jnp.sin(0.5 * math.pi * t), 2.0 * jnp.sin(0.5 * self._u(t)) ** 2
        )

    def one_minus_alpha(self, t: jax.Array) -> jax.Array:
        """cos(u) = sin(pi t / 2)."""
        return jnp.sin(0.5 * math.pi * _f32(t))

    def dalpha(self, t: jax.Array) -> jax.Array:
        """-(pi/2) sin(u)."""
        return -0.5 * math.pi * jnp.sin(self._u(t))

    def rate(self, t: jax.Array) -> jax.Array:
        """beta = (pi/2) cot(u / 2) (infinite at t = 1)."""
        half = 0.5 * self._u(t)
        return 0.5 * math.pi * jnp.cos(half) / jnp.sin(half)

    def masking_rate(self, t: jax.Array) -> jax.Array:
        """(pi/2) tan(u) = (pi/2) cot(pi t / 2)."""
        x = 0.5 * math.pi * _f32(t)
        return 0.5 * math.pi * jnp.cos(x) / jnp.sin(x)

    def inverse_alpha(self, a: jax.Array) -> jax.Array:
        """t = (2/pi) arcsin(1 - a)."""
        return jnp.arcsin(1.0 - _f32(a)) * (2.0 / math.pi)


@SCHEDULES.register("loglinear")
@pytree_dataclass
class LogLinearSchedule(_ScheduleMethods):
    """sigma_bar(t) = -log(1 - (1 - eps) t): alpha(t) = 1 - (1 - eps) t, alpha(1) = eps.

    Args:
      eps: alpha at t = 1 (> 0 keeps the concrete score and beta finite at t = 1).

    Reference: Lou et al. 2024 (SEDD), the log-linear schedule.
    """

    eps: float = static_field(default=1e-3)

    def __post_init__(self):
        check_number(self.eps, "eps", low=0.0, high=1.0, low_open=False, float32=True)

    def alpha(self, t: jax.Array) -> jax.Array:
        """1 - (1 - eps) t."""
        return 1.0 - (1.0 - self.eps) * _f32(t)

    def one_minus_alpha(self, t: jax.Array) -> jax.Array:
        """(1 - eps) t."""
        return (1.0 - self.eps) * _f32(t)

    def dalpha(self, t: jax.Array) -> jax.Array:
        """-(1 - eps)."""
        return jnp.full_like(_f32(t), -(1.0 - self.eps))

    def total_noise(self, t: jax.Array) -> jax.Array:
        """-log1p(-(1 - eps) t)."""
        return -jnp.log1p(-(1.0 - self.eps) * _f32(t))

    def masking_rate(self, t: jax.Array) -> jax.Array:
        """1 / t."""
        return 1.0 / _f32(t)

    def inverse_alpha(self, a: jax.Array) -> jax.Array:
        """t = (1 - a) / (1 - eps)."""
        return (1.0 - _f32(a)) / (1.0 - self.eps)


@SCHEDULES.register("geometric")
@pytree_dataclass
class GeometricSchedule(_ScheduleMethods):
    """sigma_bar(t) = sigma_min^(1 - t) sigma_max^t (geometric total noise).

    alpha(0) = exp(-sigma_min) < 1 and alpha(1) = exp(-sigma_max) > 0: neither end is exact,
    so likelihood bounds carry small reconstruction and prior terms.

    Args:
      sigma_min: total noise at t = 0 (> 0). sigma_max: total noise at t = 1 (> sigma_min).
        Both must be finite, normal float32 numbers.

    Reference: Lou et al. 2024 (SEDD), the geometric schedule.
    """

    sigma_min: float = static_field(default=1e-4)
    sigma_max: float = static_field(default=20.0)

    def __post_init__(self):
        # float32: sigma_min must not underflow (sigma_bar would vanish at every t) and
        # sigma_max must not overflow.
        check_number(self.sigma_min, "sigma_min", low=0.0, float32=True)
        check_number(self.sigma_max, "sigma_max", low=0.0, float32=True)
        check_ordered(self.sigma_min, "sigma_min", self.sigma_max, "sigma_max")

    @property
    def _log_ratio(self) -> float:
        return math.log(self.sigma_max / self.sigma_min)

    def total_noise(self, t: jax.Array) -> jax.Array:
        """sigma_min^(1 - t) sigma_max^t."""
        return self.sigma_min * jnp.exp(self._log_ratio * _f32(t))

    def rate(self, t: jax.Array) -> jax.Array:
        """beta = sigma_bar(t) log(sigma_max / sigma_min)."""
        return self.total_noise(t) * self._log_ratio

    def alpha(self, t: jax.Array) -> jax.Array:
        """exp(-sigma_bar(t))."""
        return jnp.exp(-self.total_noise(t))

    def one_minus_alpha(self, t: jax.Array) -> jax.Array:
        """-expm1(-sigma_bar(t))."""
        return -jnp.expm1(-self.total_noise(t))

    def dalpha(self, t: jax.Array) -> jax.Array:
        """-beta(t) alpha(t)."""
        return -self.rate(t) * self.alpha(t)

    def inverse_alpha(self, a: jax.Array) -> jax.Array:
        """t = log(-log(a) / sigma_min) / log(sigma_max / sigma_min)."""
        return jnp.log(-jnp.log(_f32(a)) / self.sigma_min) / self._log_ratio


@SCHEDULES.register("polynomial")
@pytree_dataclass
class PolynomialSchedule(_ScheduleMethods):
    """alpha(t) = 1 - t^power (power = 1 is the linear schedule).

    Args:
      power: finite exponent w > 0; w > 1 keeps tokens clean for longer.

    Reference: Shi et al. 2024 (MD4), the polynomial schedule.
    """

    power: float = static_field(default=2.0)

    def __post_init__(self):
        check_number(self.power, "power", low=0.0)

    def alpha(self, t: jax.Array) -> jax.Array:
        """1 - t^power."""
        return 1.0 - _f32(t) ** self.power

    def one_minus_alpha(self, t: jax.Array) -> jax.Array:
        """t^power."""
        return _f32(t) ** self.power

    def dalpha(self, t: jax.Array) -> jax.Array:
        """-power t^(power - 1)."""
        return -self.power * _f32(t) ** (self.power - 1.0)

    def total_noise(self, t: jax.Array) -> jax.Array:
        """-log1p(-t^power)."""
        return -jnp.log1p(-(_f32(t) ** self.power))

    def masking_rate(self, t: jax.Array) -> jax.Array:
        """power / t."""
        return self.power / _f32(t)

    def inverse_alpha(self, a: jax.Array) -> jax.Array:
        """t = (1 - a)^(1 / power)."""
        return (1.0 - _f32(a)) ** (1.0 / self.power)
