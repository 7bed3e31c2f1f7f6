"""Gaussian diffusion processes `x_t = alpha(t) x_0 + sigma(t) eps` on t in [0, 1].

t = 0 is data, t = 1 is the prior. A process only supplies `alpha(t)` and `sigma(t)` (and, where
they are cheaper or more accurate, closed forms of their derivatives); everything else follows:

* drift `f(t) = d log alpha / dt` and diffusion `g(t)^2 = d sigma^2/dt - 2 f sigma^2 = -sigma^2
  dlogSNR/dt`, so that the forward SDE `dx = f x dt + g dW` has the marginals above
  (Song et al. 2021, Score-Based Generative Modeling through SDEs; Kingma et al. 2021, VDM);
* `logSNR(t) = 2 log(alpha / sigma)`, clipped to `[-LOG_SNR_BOUND, LOG_SNR_BOUND]` so that
  `exp(+-logSNR / 2)` stays finite in float32 where alpha or sigma is exactly 0;
* marginal sampling, prior sampling and the prior log-density `N(0, sigma(1)^2 I)`.

Edge behaviour (float32): alpha and sigma are exact (0 allowed). Rates that are infinite at an end
(`f`, `g` at t = 1 for `RectifiedFlow` and `Cosine`, `d sigma/dt` at t = 0 for VP / sub-VP) are
computed with alpha and sigma floored at `TINY` (the smallest normal float32), so they are large
but finite. The reverse SDE of a process with alpha(1) = 0 is singular at t = 1, so SDE samplers
start at `process.sde_t_max` (< 1 for those processes, 1 otherwise).
"""

from __future__ import annotations

import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from diffax.core import Registry, check_choice, check_time, pytree_dataclass, static_field
from diffax.core.arrays import TINY, expand_as, sum_event
from diffax.core.validation import check_number, check_ordered, is_number

# |logSNR| <= -2 log(TINY): then sigma/alpha = exp(-logSNR/2) lies in [TINY, 1/TINY].
LOG_SNR_BOUND = -2.0 * math.log(TINY)
_F32_MAX = float(np.finfo(np.float32).max)

PROCESSES: Registry[type] = Registry("process")


def _time(t) -> jax.Array:
    check_time(t, "t")
    return jnp.asarray(t, dtype=jnp.float32)


def _check_positive(**values: float) -> None:
    # Runs on construction with Python/NumPy numbers only; pytree unflattening passes tracers,
    # arrays or placeholders, which are not checked.
    for name, value in values.items():
        if is_number(value) and not value > 0:
            raise ValueError(f"{name} must be > 0, got {value}")
        check_number(value, name, low=0.0, float32=True)


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
        t = _time(t)
        lam = 2.0 * (self.log_alpha(t) - self.log_sigma(t))
        return jnp.clip(lam, -LOG_SNR_BOUND, LOG_SNR_BOUND)

    def alpha_sigma_dt(self, t) -> tuple[jax.Array, jax.Array]:
        """(d alpha/dt, d sigma/dt); forward-mode autodiff unless a closed form is given."""
        t = _time(t)
        one = jnp.ones_like(t)
        _, da = jax.jvp(self.alpha, (t,), (one,))
        _, ds = jax.jvp(self.sigma, (t,), (one,))
        return da, ds

    def f(self, t) -> jax.Array:
        """Drift coefficient f(t) = d log alpha/dt of the forward SDE `dx = f x dt + g dW`."""
        t = _time(t)
        da, _ = self.alpha_sigma_dt(t)
        return da / jnp.maximum(self.alpha(t), TINY)

    def g2(self, t) -> jax.Array:
        """Squared diffusion g(t)^2 = d sigma^2/dt - 2 f sigma^2."""
        t = _time(t)
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
        t = _time(t)
        da, ds = self.alpha_sigma_dt(t)
        rate = da / jnp.maximum(self.alpha(t), TINY) - ds / jnp.maximum(self.sigma(t), TINY)
        return jnp.clip(2.0 * rate, -_F32_MAX, 0.0)

    def t_from_log_snr(self, log_snr) -> jax.Array:
        """Inverse of `log_snr`, clipped to [0, 1] (bisection unless a closed form is given)."""
        lam = jnp.asarray(log_snr, dtype=jnp.float32)

        def body(_, bounds):
            lo, hi = bounds
            mid = 0.5 * (lo + hi)
            above = self.log_snr(mid) > lam  # logSNR decreases with t: the root lies later.
            return jnp.where(above, mid, lo), jnp.where(above, hi, mid)

        lo, hi = jax.lax.fori_loop(0, 40, body, (jnp.zeros_like(lam), jnp.ones_like(lam)))
        return 0.5 * (lo + hi)

    def marginal_sample(self, key: jax.Array, x0: jax.Array, t) -> tuple[jax.Array, jax.Array]:
        """Draws `x_t ~ q(x_t | x_0)`.

        Args:
          key: PRNG key.
          x0: `[B, ...]` clean data.
          t: scalar or `[B]` times.

        Returns:
          `(x_t, eps)`, both `[B, ...]`, with `x_t = alpha(t) x0 + sigma(t) eps`.
        """
        t = _time(t)
        eps = jax.random.normal(key, x0.shape, dtype=x0.dtype)
        return expand_as(self.alpha(t), x0) * x0 + expand_as(self.sigma(t), x0) * eps, eps

    def prior_sample(self, key: jax.Array, shape: tuple[int, ...], t: float = 1.0) -> jax.Array:
        """Draws `[*shape]` from the prior N(0, sigma(t)^2 I) at time t (default 1)."""
        return self.sigma(_time(t)) * jax.random.normal(key, shape, dtype=jnp.float32)

    def prior_log_prob(self, x: jax.Array, t: float = 1.0) -> jax.Array:
        """Log-density of `x: [B, ...]` under N(0, sigma(t)^2 I), in nats, `[B]`."""
        log_s = self.log_sigma(_time(t))
        d = math.prod(x.shape[1:])
        sq = sum_event(jnp.square(x)) * jnp.exp(-2.0 * log_s)
        return -0.5 * sq - d * (log_s + 0.5 * math.log(2.0 * math.pi))


@PROCESSES.register("vp")
@pytree_dataclass
class VP(GaussianProcess):
    """Variance-preserving process (alpha^2 + sigma^2 = 1).

    `schedule="linear"`: beta(t) = beta_min + t (beta_max - beta_min), alpha = exp(-B(t)/2) with
    B(t) = int_0^t beta (Ho et al. 2020, DDPM; Song et al. 2021, SDEs). `schedule="cosine"`:
    alpha(t) = cos(phi(t)) / cos(phi(0)), phi(t) = (t T + s)/(1 + s) pi/2 (Nichol & Dhariwal 2021,
    Improved DDPM), with `T = cosine_t_max` < 1 so that alpha(1) > 0 (T = 0.9946 as in DPM-Solver;
    alpha(1) ~ 0.0084); the beta fields are unused there.

    Checked on construction (Python/NumPy numbers only): 0 < beta_min <= beta_max < inf,
    0 < cosine_s < inf, 0 < cosine_t_max < 1.
    """

    beta_min: float = 0.1
    beta_max: float = 20.0
    cosine_s: float = 0.008
    cosine_t_max: float = 0.9946
    schedule: str = static_field(default="linear")

    def __post_init__(self):
        check_choice(self.schedule, ("linear", "cosine"), "schedule")
        _check_positive(beta_min=self.beta_min, beta_max=self.beta_max, cosine_s=self.cosine_s)
        check_ordered(self.beta_min, "beta_min", self.beta_max, "beta_max", strict=False)
        # phi(1) = (T + s) / (1 + s) pi / 2 must stay below pi / 2 (alpha(1) > 0; T >= 1 gives
        # cos(phi(1)) <= 0 and a NaN log alpha), also after rounding to float32.
        check_number(self.cosine_t_max, "cosine_t_max", low=0.0, high=1.0)
        if is_number(self.cosine_t_max) and is_number(self.cosine_s):
            t_max, c_s = np.float32(self.cosine_t_max), np.float32(self.cosine_s)
            phi1 = (t_max + c_s) / (np.float32(1.0) + c_s) * np.float32(math.pi / 2)
            if not np.cos(phi1) > 0:
                raise ValueError(
                    f"cosine_t_max must be < 1 by more than float32 rounding (alpha(1) = "
                    f"cos(phi(1)) / cos(phi(0)) must be > 0); got {self.cosine_t_max}"
                )

    def _b(self, t):
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t * t

    def _phi(self, t):
        return (t * self.cosine_t_max + self.cosine_s) / (1.0 + self.cosine_s) * (math.pi / 2)

    def log_alpha(self, t):
        t = _time(t)
        if self.schedule == "linear":
            return -0.5 * self._b(t)
        # log(cos(phi0 + d) / cos(phi0)) = log1p(-2 sin^2(d/2) - tan(phi0) sin(d)), d = phi - phi0:
        # the plain difference of logs cancels to 0 for t < ~1e-5 in float32 (sigma(t) = 0).
        d = t * (self.cosine_t_max / (1.0 + self.cosine_s) * (math.pi / 2))
        small = d < 0.5
        ds = jnp.where(small, d, 0.0)
        near = jnp.log1p(-2.0 * jnp.sin(0.5 * ds) ** 2 - jnp.tan(self._phi(0.0)) * jnp.sin(ds))
        far = jnp.log(jnp.cos(self._phi(jnp.where(small, 1.0, t)))) - jnp.log(
            jnp.cos(self._phi(0.0))
        )
        return jnp.where(small, near, far)

    def alpha(self, t):
        return jnp.exp(self.log_alpha(t))

    def sigma(self, t):
        # 1 - alpha^2 in expm1 form: float32 keeps full relative precision for small t.
        return jnp.sqrt(-jnp.expm1(2.0 * self.log_alpha(t)))

    def f(self, t):
        t = _time(t)
        if self.schedule == "linear":
            return -0.5 * (self.beta_min + t * (self.beta_max - self.beta_min))
        dphi = self.cosine_t_max / (1.0 + self.cosine_s) * (math.pi / 2)
        return -jnp.tan(self._phi(t)) * dphi

    def g2(self, t):
        return -2.0 * self.f(t)

    def alpha_sigma_dt(self, t):
        t = _time(t)
        a, f = self.alpha(t), self.f(t)
        return f * a, -f * a * a / jnp.maximum(self.sigma(t), TINY)

    def t_from_log_snr(self, log_snr):
        lam = jnp.asarray(log_snr, dtype=jnp.float32)
        if self.schedule == "linear":
            b = jax.nn.softplus(-lam)  # B(t) = log(1 + exp(-logSNR))
            db = self.beta_max - self.beta_min
            t = 2.0 * b / (self.beta_min + jnp.sqrt(self.beta_min**2 + 2.0 * db * b))
        else:
            # sin^2 phi = 1 - sigmoid(lam) cos^2 phi0, written without cancellation for large lam.
            sin2 = jax.nn.sigmoid(-lam) + jax.nn.sigmoid(lam) * jnp.sin(self._phi(0.0)) ** 2
            phi = jnp.arcsin(jnp.sqrt(jnp.clip(sin2, 0.0, 1.0)))
            t = (phi / (math.pi / 2) * (1.0 + self.cosine_s) - self.cosine_s) / self.cosine_t_max
        return jnp.clip(t, 0.0, 1.0)


@PROCESSES.register("subvp")
@pytree_dataclass
class SubVP(GaussianProcess):
    """Sub-VP process: VP-linear alpha, sigma = 1 - alpha^2 (Song et al. 2021, SDEs, eq. 11).

    Checked on construction: 0 < beta_min <= beta_max < inf.
    """

    beta_min: float = 0.1
    beta_max: float = 20.0

    def __post_init__(self):
        _check_positive(beta_min=self.beta_min, beta_max=self.beta_max)
        check_ordered(self.beta_min, "beta_min", self.beta_max, "beta_max", strict=False)

    def _b(self, t):
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t * t

    def _beta(self, t):
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def log_alpha(self, t):
        return -0.5 * self._b(_time(t))

    def alpha(self, t):
        return jnp.exp(self.log_alpha(t))

    def sigma(self, t):
        return -jnp.expm1(-self._b(_time(t)))

    def f(self, t):
        return -0.5 * self._beta(_time(t))

    def g2(self, t):
        t = _time(t)
        return self._beta(t) * -jnp.expm1(-2.0 * self._b(t))

    def alpha_sigma_dt(self, t):
        t = _time(t)
        a2 = jnp.exp(-self._b(t))
        return -0.5 * self._beta(t) * jnp.sqrt(a2), self._beta(t) * a2


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
        _check_positive(sigma_min=self.sigma_min, sigma_max=self.sigma_max)
        check_ordered(self.sigma_min, "sigma_min", self.sigma_max, "sigma_max")

    def _log_ratio(self):
        return jnp.log(self.sigma_max) - jnp.log(self.sigma_min)

    def alpha(self, t):
        return jnp.ones_like(_time(t))

    def log_alpha(self, t):
        return jnp.zeros_like(_time(t))

    def log_sigma(self, t):
        return jnp.log(self.sigma_min) + _time(t) * self._log_ratio()

    def sigma(self, t):
        return jnp.exp(self.log_sigma(t))

    def f(self, t):
        return jnp.zeros_like(_time(t))

    def g2(self, t):
        return 2.0 * self._log_ratio() * self.sigma(t) ** 2

    def alpha_sigma_dt(self, t):
        t = _time(t)
        return jnp.zeros_like(t), self.sigma(t) * self._log_ratio()

    def t_from_log_snr(self, log_snr):
        lam = jnp.asarray(log_snr, dtype=jnp.float32)
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
        _check_positive(sigma_min=self.sigma_min, sigma_max=self.sigma_max)
        check_ordered(self.sigma_min, "sigma_min", self.sigma_max, "sigma_max")

    def alpha(self, t):
        return jnp.ones_like(_time(t))

    def log_alpha(self, t):
        return jnp.zeros_like(_time(t))

    def sigma(self, t):
        return self.sigma_min + _time(t) * (self.sigma_max - self.sigma_min)

    def f(self, t):
        return jnp.zeros_like(_time(t))

    def g2(self, t):
        return 2.0 * self.sigma(t) * (self.sigma_max - self.sigma_min)

    def alpha_sigma_dt(self, t):
        t = _time(t)
        return jnp.zeros_like(t), jnp.full_like(t, self.sigma_max - self.sigma_min)

    def t_from_log_snr(self, log_snr):
        lam = jnp.asarray(log_snr, dtype=jnp.float32)
        t = (jnp.exp(-0.5 * lam) - self.sigma_min) / (self.sigma_max - self.sigma_min)
        return jnp.clip(t, 0.0, 1.0)


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
        return 1.0 - _time(t)

    def sigma(self, t):
        return _time(t)

    def f(self, t):
        return -1.0 / jnp.maximum(self.alpha(t), TINY)

    def g2(self, t):
        t = _time(t)
        return 2.0 * t / jnp.maximum(1.0 - t, TINY)

    def alpha_sigma_dt(self, t):
        t = _time(t)
        return -jnp.ones_like(t), jnp.ones_like(t)

    def t_from_log_snr(self, log_snr):
        return jax.nn.sigmoid(-0.5 * jnp.asarray(log_snr, dtype=jnp.float32))


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
        return jnp.sin(0.5 * math.pi * (1.0 - _time(t)))

    def sigma(self, t):
        return jnp.sin(0.5 * math.pi * _time(t))

    def f(self, t):
        return -0.5 * math.pi * self.sigma(t) / jnp.maximum(self.alpha(t), TINY)

    def g2(self, t):
        return math.pi * self.sigma(t) / jnp.maximum(self.alpha(t), TINY)

    def alpha_sigma_dt(self, t):
        t = _time(t)
        return -0.5 * math.pi * self.sigma(t), 0.5 * math.pi * self.alpha(t)

    def t_from_log_snr(self, log_snr):
        lam = jnp.asarray(log_snr, dtype=jnp.float32)
        return jnp.clip(jnp.arctan(jnp.exp(-0.5 * lam)) / (0.5 * math.pi), 0.0, 1.0)
