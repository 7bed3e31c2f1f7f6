"""Time samplers for Monte-Carlo estimates over t, as factories that bind their parameters.

A `TimeSampler` draws `(t [B], importance_weight [B])` in [t_min, t_max]. All built-in samplers but
"lognormal" estimate the *same* objective, the average over t ~ U[t_min, t_max]
(`uniform_average=True`):

* `uniform()`: B independent uniform times;
* `stratified()`: the B times (u + i)/B, i = 0..B-1, sharing one uniform u (one per stratum;
  Kingma et al. 2021, VDM's low-discrepancy sampler);
* `antithetic()`: pairs (u, 1 - u) of uniform times (B/2 independent u);
* `importance()`: logSNR-uniform times with weight U(t)/p(t): unbiased for the uniform average,
  and with the likelihood weighting the product w * weight is constant (Song et al. 2021b);
* `lognormal(mean, std)`: EDM's log sigma ~ N(mean, std^2) (Karras et al. 2022) *defines* its own
  objective and has weight 1.

`TIME_SAMPLERS` maps each name to its factory; `lognormal`'s `mean`, `std` are the loss options
`p_mean`, `p_std`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from diffax.continuous.losses.named import build
from diffax.continuous.processes import GaussianProcess
from diffax.core import Registry
from diffax.core.validation import check_number, check_time_range

SampleFn = Callable[[jax.Array, int, GaussianProcess, float, float], tuple[jax.Array, jax.Array]]


class TimeSampler(NamedTuple):
    """Draws times for a Monte-Carlo estimate over t.

    Attributes:
      sample: `(key, batch, process, t_min, t_max) -> (t [B], importance_weight [B])`.
      uniform_average: True if `mean(weight * h(t))` estimates the average of h over
        U[t_min, t_max] (what `elbo_terms` needs); False if the sampler defines its own law.
      name: for messages.
    """

    sample: SampleFn
    uniform_average: bool = True
    name: str = "custom"


TIME_SAMPLERS: Registry[Callable[..., TimeSampler]] = Registry("time sampler")

# Loss options whose name differs from the factory's parameter (kept from the string-only API).
OPTION_NAMES: dict[str, dict[str, str]] = {"lognormal": {"p_mean": "mean", "p_std": "std"}}


def _scale(u, t_min, t_max):
    return t_min + (t_max - t_min) * u


@TIME_SAMPLERS.register("uniform")
def uniform() -> TimeSampler:
    """B independent times, U[t_min, t_max]."""

    def sample(key, batch, process, t_min, t_max):
        t = jax.random.uniform(key, (batch,), minval=t_min, maxval=t_max)
        return t, jnp.ones((batch,))

    return TimeSampler(sample, name="uniform")


@TIME_SAMPLERS.register("stratified")
def stratified() -> TimeSampler:
    """Times (u + i)/B, i = 0..B-1, with one shared u ~ U[0, 1) (Kingma et al. 2021, VDM)."""

    def sample(key, batch, process, t_min, t_max):
        u = (jax.random.uniform(key, ()) + jnp.arange(batch)) / batch
        return _scale(u, t_min, t_max), jnp.ones((batch,))

    return TimeSampler(sample, name="stratified")


@TIME_SAMPLERS.register("antithetic")
def antithetic() -> TimeSampler:
    """Pairs (u, 1 - u) of uniform times; for odd B the last pair is cut to one time."""

    def sample(key, batch, process, t_min, t_max):
        u = jax.random.uniform(key, ((batch + 1) // 2,))
        u = jnp.concatenate([u, 1.0 - u])[:batch]
        return _scale(u, t_min, t_max), jnp.ones((batch,))

    return TimeSampler(sample, name="antithetic")


@TIME_SAMPLERS.register("importance")
def importance() -> TimeSampler:
    """logSNR-uniform times, weight U(t)/p(t) (Song et al. 2021b, Maximum Likelihood Training)."""

    def sample(key, batch, process, t_min, t_max):
        lam_hi, lam_lo = process.log_snr(t_min), process.log_snr(t_max)
        lam = lam_lo + (lam_hi - lam_lo) * jax.random.uniform(key, (batch,))
        t = jnp.clip(process.t_from_log_snr(lam), t_min, t_max)
        # p(t) = |dlogSNR/dt| / (lam_hi - lam_lo); weight = U(t) / p(t).
        weight = (lam_hi - lam_lo) / ((t_max - t_min) * -process.dlog_snr_dt(t))
        return t, weight

    return TimeSampler(sample, name="importance")


@TIME_SAMPLERS.register("lognormal")
def lognormal(mean: float = -1.2, std: float = 1.2) -> TimeSampler:
    """log(sigma/alpha) ~ N(mean, std^2), clipped to [t_min, t_max]; weight 1 (EDM, Karras et al.
    2022: mean -1.2, std 1.2). std > 0."""
    check_number(mean, "mean")
    check_number(std, "std", low=0.0)

    def sample(key, batch, process, t_min, t_max):
        log_s = mean + std * jax.random.normal(key, (batch,))
        t = jnp.clip(process.t_from_log_snr(-2.0 * log_s), t_min, t_max)
        return t, jnp.ones((batch,))

    return TimeSampler(sample, uniform_average=False, name="lognormal")


def time_sampler_from(sampler: str | TimeSampler, options: dict, argument: str) -> TimeSampler:
    """The `TimeSampler` for a name (with its loss options) or an object (no options)."""
    return build(TIME_SAMPLERS, sampler, argument, options, OPTION_NAMES, TimeSampler)


def sample_times(
    key: jax.Array,
    batch: int,
    process: GaussianProcess,
    *,
    sampler: str | TimeSampler = "uniform",
    t_min: float = 1e-5,
    t_max: float = 1.0,
    **options,
) -> tuple[jax.Array, jax.Array]:
    """Draws `(t [B], importance_weight [B])` with a time sampler.

    Args:
      key: PRNG key.
      batch: B.
      process: the process (logSNR-based samplers need it).
      sampler: a `TimeSampler` or a name in `TIME_SAMPLERS`: "uniform", "stratified",
        "antithetic", "importance" or "lognormal".
      t_min, t_max: time range, 0 <= t_min < t_max <= 1 (t_min default 1e-5, Song et al. 2021).
      **options: the named sampler's options, `p_mean`, `p_std` (> 0) for "lognormal" (EDM:
        -1.2, 1.2); any other option is an error listing the allowed ones.

    Reference: Kingma et al. 2021, VDM (low-discrepancy sampler); Song et al. 2021b, Maximum
    Likelihood Training of Score-Based Diffusion Models (importance sampling); Karras et al. 2022.
    """
    check_time_range(t_min, t_max)
    sampler = time_sampler_from(sampler, options, "sampler")
    return sampler.sample(key, batch, process, t_min, t_max)
