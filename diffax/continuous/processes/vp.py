"""Variance-preserving (VP) and sub-VP processes, both driven by a VP schedule object."""

from __future__ import annotations

import jax.numpy as jnp

from diffax.continuous.processes.base import PROCESSES, GaussianProcess, as_time
from diffax.continuous.processes.schedules import (
    SCHEDULES,
    VPSchedule,
    check_vp_schedule,
)
from diffax.core import pytree_dataclass
from diffax.core.arrays import TINY, float_dtype

# Keyword arguments kept from the time VP held its schedule's numbers itself: each names the
# schedule it belongs to and that schedule's parameter.
_SCHEDULE_KEYWORDS = {
    "beta_min": ("linear", "beta_min"),
    "beta_max": ("linear", "beta_max"),
    "cosine_s": ("cosine", "s"),
    "cosine_t_max": ("cosine", "t_max"),
}


def _schedule_from(owner: str, schedule: VPSchedule | str | None, **keywords) -> VPSchedule:
    """The schedule object for `owner(schedule=..., **keywords)`; names resolved in SCHEDULES.

    `keywords` (those not None) are parameters of the named schedule (`beta_min`, `beta_max` for
    "linear"; `cosine_s`, `cosine_t_max` for "cosine"); with a schedule object there are none.
    """
    given = {k: v for k, v in keywords.items() if v is not None}
    if schedule is None or isinstance(schedule, str):
        name = "linear" if schedule is None else schedule
        cls = SCHEDULES.get(name, "schedule")
        params = {}
        for key, value in given.items():
            target, param = _SCHEDULE_KEYWORDS[key]
            if target != name:
                allowed = [k for k, (s, _) in _SCHEDULE_KEYWORDS.items() if s == name]
                raise ValueError(
                    f"{owner}({key}=...) must come with schedule={target!r}; schedule={name!r} "
                    f"takes {', '.join(allowed) or 'no keyword parameters'}"
                )
            params[param] = value
        try:
            schedule = cls(**params)
        except ValueError as err:
            args = ", ".join(f"{k}={v!r}" for k, v in given.items())
            raise ValueError(f"{owner}({args}, schedule={name!r}): {err}") from err
    elif given:
        raise ValueError(
            f"{owner}({', '.join(given)}=...) must not be given with a schedule object: set the "
            f"parameters on the schedule ({schedule!r})"
        )
    check_vp_schedule(schedule)
    return schedule


@PROCESSES.register("vp")
@pytree_dataclass
class VP(GaussianProcess):
    """Variance-preserving process: alpha(t) from a VP schedule, sigma^2 = 1 - alpha^2.

    `VP(schedule=LinearBeta(0.1, 20.0))` (the default), `VP(schedule=CosineSchedule())` or any
    `VPSchedule`; a name in `SCHEDULES` ("linear", "cosine") builds that schedule. The keyword
    forms `VP(beta_min=..., beta_max=...)` (linear) and `VP(schedule="cosine", cosine_s=...,
    cosine_t_max=...)` build the named schedule with those numbers; a keyword of another schedule
    is an error. Drift f = -beta/2, diffusion g^2 = beta (Ho et al. 2020, DDPM; Song et al. 2021,
    SDEs; Nichol & Dhariwal 2021 for the cosine schedule).
    """

    schedule: VPSchedule

    def __init__(
        self,
        beta_min: float | None = None,
        beta_max: float | None = None,
        cosine_s: float | None = None,
        cosine_t_max: float | None = None,
        schedule: VPSchedule | str | None = None,
    ):
        schedule = _schedule_from(
            "VP",
            schedule,
            beta_min=beta_min,
            beta_max=beta_max,
            cosine_s=cosine_s,
            cosine_t_max=cosine_t_max,
        )
        object.__setattr__(self, "schedule", schedule)

    def log_alpha(self, t):
        return self.schedule.log_alpha(as_time(t))

    def alpha(self, t):
        return jnp.exp(self.log_alpha(t))

    def sigma(self, t):
        # 1 - alpha^2 in expm1 form: float32 keeps full relative precision for small t.
        return jnp.sqrt(-jnp.expm1(2.0 * self.log_alpha(t)))

    def f(self, t):
        return -0.5 * self.schedule.beta(as_time(t))

    def g2(self, t):
        return -2.0 * self.f(t)

    def alpha_sigma_dt(self, t):
        t = as_time(t)
        a, f = self.alpha(t), self.f(t)
        return f * a, -f * a * a / jnp.maximum(self.sigma(t), TINY)

    def t_from_log_snr(self, log_snr):
        lam = jnp.asarray(log_snr, dtype=float_dtype())
        return jnp.clip(self.schedule.t_from_log_snr(lam), 0.0, 1.0)


@PROCESSES.register("subvp")
@pytree_dataclass
class SubVP(GaussianProcess):
    """Sub-VP process: the VP alpha of a schedule, sigma = 1 - alpha^2 (Song et al. 2021, eq. 11).

    `SubVP(beta_min=..., beta_max=...)` (linear schedule, the default) or
    `SubVP(schedule=<VPSchedule or name>)`. g^2 = beta (1 - alpha^4).
    """

    schedule: VPSchedule

    def __init__(
        self,
        beta_min: float | None = None,
        beta_max: float | None = None,
        schedule: VPSchedule | str | None = None,
    ):
        schedule = _schedule_from("SubVP", schedule, beta_min=beta_min, beta_max=beta_max)
        object.__setattr__(self, "schedule", schedule)

    def _beta(self, t):
        return self.schedule.beta(t)

    def log_alpha(self, t):
        return self.schedule.log_alpha(as_time(t))

    def alpha(self, t):
        return jnp.exp(self.log_alpha(t))

    def sigma(self, t):
        return -jnp.expm1(2.0 * self.log_alpha(t))

    def f(self, t):
        return -0.5 * self._beta(as_time(t))

    def g2(self, t):
        t = as_time(t)
        return self._beta(t) * -jnp.expm1(4.0 * self.log_alpha(t))

    def alpha_sigma_dt(self, t):
        t = as_time(t)
        a2 = jnp.exp(2.0 * self.log_alpha(t))
        return -0.5 * self._beta(t) * jnp.sqrt(a2), self._beta(t) * a2
