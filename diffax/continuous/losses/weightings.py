"""Loss weightings w(t) of denoising score matching, as factories that bind their parameters.

A weighting is a `Weighting`: the target space it is written in and w(t), plus (for the built-in
ones) closed forms that keep the loss exact at t = 0 and t = 1. The built-in factories, written in
their natural spaces (Kingma & Gao 2023, Understanding Diffusion Objectives, Table 1, appendix D):

| factory             | space    | w(t)                                     | reference          |
|---------------------|----------|------------------------------------------|--------------------|
| `eps()`, `simple()` | eps      | 1                                        | Ho et al. 2020     |
| `likelihood()`      | eps      | g^2/sigma^2 = -dlogSNR/dt                | Song et al. 2021b  |
| `snr(gamma=inf)`    | x0       | min(SNR, gamma)                          | Hang et al. 2023   |
| `x0()`              | x0       | 1                                        | Kingma et al. 2021 |
| `v()`               | v        | 1                                        | Salimans & Ho 2022 |
| `edm(sigma_data)`   | x0       | (s^2 + s_d^2)/(s s_d)^2, s = sigma/alpha | Karras et al. 2022 |
| `flow_matching()`   | velocity | 1                                        | Lipman et al. 2023 |

`WEIGHTINGS` maps each name to its factory (configs and `dsm_loss(weighting="edm",
sigma_data=0.5)` use it); `snr`'s `gamma` is the loss option `snr_gamma`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from diffax.continuous.processes import GaussianProcess
from diffax.core import Registry, check_choice
from diffax.core.validation import check_number, is_number

SPACES = ("eps", "x0", "v", "velocity")


class Ends(NamedTuple):
    """Exact-zero flags at times t, each `[B]` bool: the singular points of a loss."""

    alpha0: jax.Array  # alpha(t) == 0
    sigma0: jax.Array  # sigma(t) == 0
    dsigma_inf: jax.Array  # d sigma/dt = inf (sigma = 0 with g^2 > 0: sigma ~ sqrt(t), VP)


def ends(process: GaussianProcess, t: jax.Array) -> Ends:
    """The `Ends` flags of `process` at `t`.

    d sigma^2/dt = g^2 + 2 f sigma^2, so at sigma = 0 with g^2 > 0 sigma grows like sqrt(t).
    """
    sigma0 = process.sigma(t) == 0
    return Ends(process.alpha(t) == 0, sigma0, sigma0 & (process.g2(t) > 0))


class Weighting(NamedTuple):
    """A DSM loss weighting w(t) in a target space.

    Attributes:
      space: the target space w is written in: "eps", "x0", "v" or "velocity".
      weight: `(process, t [B]) -> w(t) [B]` (inf where w is infinite).
      log_weight: optional `(process, t [B], log_snr [B]) -> log w(t) [B]` in a form that stays
        finite at the ends; `log_snr` is floored like the loss's own logs. Default `log(weight)`.
      infinite: optional `(Ends) -> [B] bool`, where w(t) is infinite; `loss_weight` refuses a
        concrete t there. None: not checked.
      loss_infinite: optional `(prediction_space, Ends) -> [B] bool`, where the weighted loss of a
        generic model in `prediction_space` ("eps", "x0", "v", "velocity") has no finite limit;
        `dsm_loss` refuses a concrete t there. None: wherever the combined weight is not finite.
      name: for messages.
    """

    space: str
    weight: Callable[[GaussianProcess, jax.Array], jax.Array]
    log_weight: Callable[[GaussianProcess, jax.Array, jax.Array], jax.Array] | None = None
    infinite: Callable[[Ends], jax.Array] | None = None
    loss_infinite: Callable[[str, Ends], jax.Array] | None = None
    name: str = "custom"


WEIGHTINGS: Registry[Callable[..., Weighting]] = Registry("loss weighting")

# Loss options whose name differs from the factory's parameter (kept from the string-only API).
OPTION_NAMES: dict[str, dict[str, str]] = {"snr": {"snr_gamma": "gamma"}}


def _no_x0(prediction_space: str, e: Ends) -> jax.Array:
    # An eps (or score) prediction does not determine x0 = (x_t - sigma eps)/alpha where alpha = 0.
    return (prediction_space == "eps") & e.alpha0


def _no_eps(prediction_space: str, e: Ends) -> jax.Array:
    # An x0 prediction does not determine eps = (x_t - alpha x0)/sigma where sigma = 0.
    return (prediction_space == "x0") & e.sigma0


def _unit(space: str, name: str) -> Weighting:
    def loss_infinite(prediction_space: str, e: Ends) -> jax.Array:
        bad = (_no_x0(prediction_space, e) & (space != "eps")) | (
            _no_eps(prediction_space, e) & (space != "x0")
        )
        return bad | (e.dsigma_inf & (space == "velocity"))

    return Weighting(
        space=space,
        weight=lambda process, t: jnp.ones_like(t),
        log_weight=lambda process, t, log_snr: jnp.zeros_like(t),
        infinite=lambda e: jnp.zeros_like(e.alpha0),
        loss_infinite=loss_infinite,
        name=name,
    )


@WEIGHTINGS.register("eps")
def eps() -> Weighting:
    """w = 1 in eps space: the "simple" DDPM loss (Ho et al. 2020)."""
    return _unit("eps", "eps")


@WEIGHTINGS.register("simple")
def simple() -> Weighting:
    """Another name for `eps()` (Ho et al. 2020)."""
    return _unit("eps", "simple")


@WEIGHTINGS.register("x0")
def x0() -> Weighting:
    """w = 1 in x0 space (Kingma et al. 2021, VDM)."""
    return _unit("x0", "x0")


@WEIGHTINGS.register("v")
def v() -> Weighting:
    """w = 1 in v space, v = alpha eps - sigma x0 (Salimans & Ho 2022)."""
    return _unit("v", "v")


@WEIGHTINGS.register("flow_matching")
def flow_matching() -> Weighting:
    """w = 1 in velocity space, alpha' x0 + sigma' eps (Lipman et al. 2023, Flow Matching)."""
    return _unit("velocity", "flow_matching")


@WEIGHTINGS.register("likelihood")
def likelihood() -> Weighting:
    """w = g^2/sigma^2 = -dlogSNR/dt in eps space: the ELBO weighting (Song et al. 2021b)."""

    def weight(process, t):
        # -dlogSNR/dt = 2 (sigma'/sigma - alpha'/alpha) is infinite where sigma or alpha vanishes;
        # the process clips it to the largest float32, the weight says inf.
        e = ends(process, t)
        return jnp.where(e.alpha0 | e.sigma0, jnp.inf, -process.dlog_snr_dt(t))

    return Weighting(
        space="eps",
        weight=weight,
        log_weight=lambda process, t, log_snr: jnp.log(-process.dlog_snr_dt(t)),
        infinite=lambda e: e.alpha0 | e.sigma0,
        loss_infinite=lambda p, e: e.sigma0 | _no_x0(p, e),
        name="likelihood",
    )


@WEIGHTINGS.register("snr")
def snr(gamma: float = math.inf) -> Weighting:
    """w = min(SNR, gamma) in x0 space (min-SNR-gamma; Hang et al. 2023). gamma > 0, inf: no cap."""
    if is_number(gamma) and not gamma > 0:
        raise ValueError(f"gamma must be > 0 (inf for no cap), got {gamma}")
    return Weighting(
        space="x0",
        weight=lambda process, t: jnp.minimum(jnp.exp(process.log_snr(t)), gamma),
        log_weight=lambda process, t, log_snr: jnp.minimum(log_snr, jnp.log(gamma)),
        infinite=lambda e: e.sigma0 & jnp.isinf(gamma),
        loss_infinite=lambda p, e: _no_eps(p, e) & jnp.isinf(gamma),
        name="snr",
    )


@WEIGHTINGS.register("edm")
def edm(sigma_data: float = 0.5) -> Weighting:
    """w = (s^2 + s_d^2)/(s s_d)^2, s = sigma/alpha, in x0 space (Karras et al. 2022, EDM).

    Written as 1/s_d^2 + SNR: finite (1/s_d^2) where alpha = 0, instead of inf/inf.
    """
    check_number(sigma_data, "sigma_data", low=0.0)
    return Weighting(
        space="x0",
        weight=lambda process, t: 1.0 / sigma_data**2 + jnp.exp(process.log_snr(t)),
        log_weight=lambda process, t, log_snr: jnp.logaddexp(-2.0 * jnp.log(sigma_data), log_snr),
        infinite=lambda e: e.sigma0,
        loss_infinite=lambda p, e: _no_x0(p, e) | _no_eps(p, e),
        name="edm",
    )


def check_weighting(weighting: object, argument: str = "weighting") -> Weighting:
    """Returns `weighting` if it is a `Weighting` with a known space; a clear error otherwise."""
    if not isinstance(weighting, Weighting):
        raise TypeError(
            f"{argument} must be a Weighting (e.g. diffax.continuous.weightings.edm()) or one of "
            f"the names {', '.join(WEIGHTINGS.names())}; got {weighting!r}"
        )
    check_choice(weighting.space, SPACES, f"{argument}.space")
    return weighting
