"""What a network predicts, and exact conversions between the choices.

Given `x_t = alpha x_0 + sigma eps` (alpha, sigma, and their time derivatives ' at t), every
parameterization is linear in the pair (x_0, eps):

| name       | target                            | reference                                  |
|------------|-----------------------------------|--------------------------------------------|
| `eps`      | eps                               | Ho et al. 2020, DDPM                       |
| `x0`       | x_0                               | Kingma et al. 2021, VDM                    |
| `v`        | alpha eps - sigma x_0             | Salimans & Ho 2022, Progressive Distillation |
| `score`    | grad log p_t(x_t) = -eps / sigma  | Song et al. 2021, SDEs                     |
| `velocity` | dx_t/dt = alpha' x_0 + sigma' eps | Lipman et al. 2023, Flow Matching          |

For a model's output these targets become the posterior means, so converting one to another is
exact: solve the 2x2 system `[x_t; out] = M [x_0; eps]`, then map (x_0, eps) to the new target.
Where the system is singular the undetermined component is set to 0: eps at sigma = 0 (there
x_t = alpha x_0 carries no information about eps and E[eps | x_t] = 0 exactly) and x_0 at
alpha = 0 (x_t carries no information about x_0; 0 is E[x_0] for centred data). The score at
sigma = 0 is likewise returned as 0. With those conventions every conversion is finite at t = 0 and
t = 1 for every process.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from diffax.continuous.processes import GaussianProcess
from diffax.core import batch_time, check_choice, check_shape
from diffax.core.arrays import TINY, expand_as, safe_div

PREDICTIONS = ("eps", "x0", "v", "score", "velocity")

ModelFn = Callable[[jax.Array, jax.Array], jax.Array]


def _coefficients(process: GaussianProcess, t: jax.Array, x: jax.Array):
    da, ds = process.alpha_sigma_dt(t)
    return tuple(expand_as(c, x) for c in (process.alpha(t), process.sigma(t), da, ds))


def to_x0_eps(
    process: GaussianProcess, prediction: str, output: jax.Array, x_t: jax.Array, t: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Recovers (x_0, eps) from a prediction.

    Args:
      process: the Gaussian process.
      prediction: one of `PREDICTIONS`.
      output: `[B, ...]` model output in the `prediction` parameterization.
      x_t: `[B, ...]` noisy input.
      t: `[B]` or scalar times.

    Returns:
      `(x0, eps)`, both `[B, ...]`. Reference: Kingma et al. 2021, VDM (appendix on
      parameterizations).
    """
    check_choice(prediction, PREDICTIONS, "prediction")
    a, s, da, ds = _coefficients(process, t, x_t)
    if prediction == "eps":
        return safe_div(x_t - s * output, a), output
    if prediction == "x0":
        return output, safe_div(x_t - a * output, s)
    if prediction == "v":
        norm = a * a + s * s  # > 0 for every process
        return (a * x_t - s * output) / norm, (s * x_t + a * output) / norm
    if prediction == "score":
        eps = -s * output
        return safe_div(x_t - s * eps, a), eps
    det = a * ds - s * da  # = -alpha sigma dlogSNR/dt / 2, > 0 wherever alpha sigma > 0
    return safe_div(ds * x_t - s * output, det), safe_div(a * output - da * x_t, det)


def from_x0_eps(
    process: GaussianProcess, prediction: str, x0: jax.Array, eps: jax.Array, t: jax.Array
) -> jax.Array:
    """Maps (x_0, eps), each `[B, ...]`, to the `prediction` target `[B, ...]` at times `t`."""
    check_choice(prediction, PREDICTIONS, "prediction")
    a, s, da, ds = _coefficients(process, t, x0)
    if prediction == "eps":
        return eps
    if prediction == "x0":
        return x0
    if prediction == "v":
        return a * eps - s * x0
    if prediction == "score":
        return safe_div(-eps, s)
    return da * x0 + ds * eps


def convert(
    process: GaussianProcess,
    output: jax.Array,
    x_t: jax.Array,
    t,
    *,
    source: str,
    target: str,
) -> jax.Array:
    """Converts a `[B, ...]` prediction from parameterization `source` to `target`.

    Exact for any pair (see the module docstring); `t` is a scalar or `[B]`.
    Reference: Kingma & Gao 2023, Understanding Diffusion Objectives (appendix A).
    """
    t = batch_time(t, x_t.shape[0])
    x0, eps = to_x0_eps(process, source, output, x_t, t)
    return from_x0_eps(process, target, x0, eps, t)


Denoiser = Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]


def make_denoiser(process: GaussianProcess, model_fn: ModelFn, prediction: str) -> Denoiser:
    """Wraps `model_fn(x: [B, ...], t: [B]) -> [B, ...]` into `(x, t) -> (x0_hat, eps_hat)`.

    Checks at trace time that `prediction` is known and that the output has the input's shape.
    """
    check_choice(prediction, PREDICTIONS, "prediction")

    def denoise(x: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        t = batch_time(t, x.shape[0])
        out = model_fn(x, t)
        check_shape(out, x.shape, "model_fn output")
        return to_x0_eps(process, prediction, out.astype(x.dtype), x, t)

    return denoise


def pf_ode_velocity(
    process: GaussianProcess, x0: jax.Array, eps: jax.Array, t: jax.Array
) -> jax.Array:
    """Probability-flow ODE velocity `dx/dt = alpha' x0_hat + sigma' eps_hat` `[B, ...]`.

    Equal to `f x - g^2 score / 2` (Song et al. 2021) but finite wherever alpha', sigma' are, e.g.
    at t = 1 for RectifiedFlow where f and g are not.
    """
    return from_x0_eps(process, "velocity", x0, eps, t)


class EDMScalings(NamedTuple):
    """EDM preconditioning coefficients (each broadcastable against the data)."""

    c_skip: jax.Array
    c_out: jax.Array
    c_in: jax.Array
    c_noise: jax.Array


def edm_preconditioning(sigma: jax.Array, sigma_data: float = 0.5) -> EDMScalings:
    """EDM preconditioning for `D(x; sigma) = c_skip x + c_out F(c_in x, c_noise)`.

    `sigma` is the noise level of `x = x_0 + sigma eps` (for a general process, sigma/alpha applied
    to x_t/alpha; see `edm_denoiser`). Karras et al. 2022, EDM, Table 1.
    """
    sigma = jnp.asarray(sigma, dtype=jnp.float32)
    total = sigma * sigma + sigma_data**2
    return EDMScalings(
        c_skip=sigma_data**2 / total,
        c_out=sigma * sigma_data * jax.lax.rsqrt(total),
        c_in=jax.lax.rsqrt(total),
        c_noise=0.25 * jnp.log(jnp.maximum(sigma, TINY)),
    )


def edm_denoiser(network_fn: ModelFn, process: GaussianProcess, sigma_data: float = 0.5) -> ModelFn:
    """Wraps a raw network `F(x_in: [B, ...], c_noise: [B])` into an `x0`-predicting `model_fn`.

    The process is mapped to EDM form `x_t / alpha = x_0 + (sigma/alpha) eps`; use the result with
    `prediction="x0"`. Karras et al. 2022, EDM, section 5.
    """

    def model_fn(x: jax.Array, t: jax.Array) -> jax.Array:
        t = batch_time(t, x.shape[0])
        log_ratio = process.log_sigma(t) - process.log_alpha(t)
        sc = edm_preconditioning(jnp.exp(log_ratio), sigma_data)
        x_scaled = x * expand_as(jnp.exp(-process.log_alpha(t)), x)
        c_skip, c_out, c_in = (expand_as(c, x) for c in sc[:3])
        out = network_fn(c_in * x_scaled, sc.c_noise)
        return c_skip * x_scaled + c_out * out

    return model_fn
