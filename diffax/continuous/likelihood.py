"""Exact log-likelihood through the probability-flow ODE (instantaneous change of variables).

`log p_{t_min}(x) = log p_prior(x_T) + int_{t_min}^{T} div u(x_t, t) dt` along the PF-ODE
`dx/dt = u(x, t)` started at x. The divergence is exact (one JVP per dimension, for small d) or the
Hutchinson-Skilling estimate `z^T (du/dx) z` with a probe z fixed for the whole solve. The ODE is
solved on device with `diffax.continuous.adaptive_rk` (no host callbacks).
Song et al. 2021, SDEs (section 4.3, appendix D.2); Grathwohl et al. 2019, FFJORD.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from diffax.continuous.adaptive_rk import solve_adaptive
from diffax.continuous.parameterizations import ModelFn, make_denoiser, pf_ode_velocity
from diffax.continuous.processes import GaussianProcess
from diffax.core import check_choice, check_time, is_concrete
from diffax.core.arrays import event_size, sum_event
from diffax.core.validation import check_finite

PROBES = ("rademacher", "gaussian")


def jacobian_trace(fn: Callable[[jax.Array], jax.Array], x: jax.Array):
    """`(fn(x), div fn(x))` for a batched, per-example map `fn: [B, ...] -> [B, ...]`.

    One linearization and one JVP per event dimension (vectorized), so cost grows with d.
    Returns `(fn(x) [B, ...], divergence [B])`.
    """
    d = event_size(x)
    out, f_jvp = jax.linearize(fn, x)
    basis = jnp.eye(d, dtype=x.dtype).reshape((d, 1) + x.shape[1:])
    cols = jax.vmap(lambda e: f_jvp(jnp.broadcast_to(e, x.shape)))(basis)  # [d, B, ...]
    cols = cols.reshape(d, x.shape[0], d)
    return out, jnp.einsum("ibi->b", cols)


def hutchinson_trace(fn: Callable[[jax.Array], jax.Array], x: jax.Array, probe: jax.Array):
    """`(fn(x), probe^T J probe)`: an unbiased divergence estimate if E[probe probe^T] = I.

    Hutchinson 1989; Skilling 1989. `probe` has the shape of `x`; returns `([B, ...], [B])`.
    """
    out, f_jvp = jax.linearize(fn, x)
    return out, sum_event(f_jvp(probe) * probe)


def draw_probe(key: jax.Array, shape: tuple[int, ...], probe: str = "rademacher") -> jax.Array:
    """A float32 probe with E[z z^T] = I: Rademacher (+-1) or standard Gaussian."""
    check_choice(probe, PROBES, "probe")
    if probe == "gaussian":
        return jax.random.normal(key, shape, jnp.float32)
    return jax.random.rademacher(key, shape, jnp.float32)


def log_likelihood_and_info(
    key: jax.Array,
    process: GaussianProcess,
    model_fn: ModelFn,
    x: jax.Array,
    *,
    prediction: str = "eps",
    exact_divergence: bool = False,
    probe: str = "rademacher",
    t_min: float = 1e-5,
    t_max: float = 1.0,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    method: str = "dopri5",
    backend: str = "own",
    max_steps: int = 4096,
) -> tuple[jax.Array, dict]:
    """`log_likelihood` that also returns `info` (`nfe`: ODE right-hand sides, `success`)."""
    check_choice(probe, PROBES, "probe")
    check_time(t_min, "t_min")
    check_time(t_max, "t_max")
    if is_concrete(t_min) and is_concrete(t_max) and not np.asarray(t_min) < np.asarray(t_max):
        raise ValueError(
            f"log_likelihood integrates from t_min up to t_max and needs t_min < t_max; got "
            f"t_min={t_min}, t_max={t_max}"
        )
    denoiser = make_denoiser(process, model_fn, prediction)
    batch = x.shape[0]
    x = jnp.asarray(x, jnp.float32)
    z = draw_probe(key, x.shape, probe)

    def rhs(t, state):
        y, _ = state
        tb = jnp.full((batch,), t)

        def velocity(y):
            return pf_ode_velocity(process, *denoiser(y, tb), tb)

        if exact_divergence:
            u, div = jacobian_trace(velocity, y)
        else:
            u, div = hutchinson_trace(velocity, y, z)
        # Concrete in an eager call at the solve's first evaluations (before the while loop);
        # without this a NaN model output surfaced as a NaN step size, i.e. as a bad time.
        if is_concrete(u) and is_concrete(div):
            bad = int(np.size(u) - np.count_nonzero(np.isfinite(u)))
            bad += int(np.size(div) - np.count_nonzero(np.isfinite(div)))
            if bad:
                raise ValueError(
                    f"model_fn output is not finite (NaN or inf) at t={float(t)}: the PF-ODE "
                    f"velocity and divergence computed from it have {bad} non-finite values"
                )
        return u, div

    (x_t, delta), stats = solve_adaptive(
        rhs,
        (x, jnp.zeros((batch,), jnp.float32)),
        t_min,
        t_max,
        method=method,
        backend=backend,
        rtol=rtol,
        atol=atol,
        max_steps=max_steps,
    )
    logp = process.prior_log_prob(x_t, t=t_max) + delta
    # A failed solve (max_steps reached, non-finite model output) has not reached t_max: its
    # value is no log-density, so it is NaN rather than a plausible-looking number.
    logp = jnp.where(stats.success, logp, jnp.nan)
    check_finite(
        logp,
        "the log-likelihood",
        " (the ODE solve failed: a non-finite model_fn output, or max_steps reached)",
    )
    return logp, {"nfe": stats.nfe, "num_steps": stats.num_steps, "success": stats.success}


def log_likelihood(
    key: jax.Array,
    process: GaussianProcess,
    model_fn: ModelFn,
    x: jax.Array,
    *,
    prediction: str = "eps",
    exact_divergence: bool = False,
    **options,
) -> jax.Array:
    """PF-ODE log-density of `x: [B, ...]` in nats, `[B]`.

    Args:
      key: PRNG key for the Hutchinson probe (unused with `exact_divergence=True`).
      process: the Gaussian process.
      model_fn: `(x: [B, ...], t: [B]) -> [B, ...]`, predicting `prediction`.
      x: `[B, ...]` data.
      prediction: what `model_fn` predicts.
      exact_divergence: exact trace (d JVPs per step; small d) or Hutchinson-Skilling.
      **options: `probe` ("rademacher" | "gaussian"), `t_min` (default 1e-5: the density returned
        is that of x_{t_min}, Song et al. 2021), `t_max` (1; t_min < t_max), `rtol`, `atol`
        (1e-5), `method` ("dopri5"), `backend` ("own" | "diffrax"), `max_steps`.

    The model is only evaluated at times in [t_min, t_max]. A model output that is not finite
    is a `ValueError` when values are concrete (eager call). Where the solve fails (a
    non-finite model output, or `max_steps` reached) the result is NaN (under `jit`;
    `log_likelihood_and_info` reports `success = False`) and eagerly a `ValueError`.

    Reference: Song et al. 2021, SDEs (eq. 39); Chen et al. 2018, Neural ODEs.
    """
    logp, _ = log_likelihood_and_info(
        key,
        process,
        model_fn,
        x,
        prediction=prediction,
        exact_divergence=exact_divergence,
        **options,
    )
    return logp


def bits_per_dim(log_prob: jax.Array, num_dims: int, log_bin_width: float = 0.0) -> jax.Array:
    """Converts a log-density in nats `[B]` to bits per dimension `[B]`.

    For discrete data dequantized into bins of width w (e.g. 8-bit pixels scaled to [-1, 1]:
    w = 2/256), pass `log_bin_width = log(w)` so that the result bounds -log2 P(x) / d.
    """
    return -(log_prob + num_dims * log_bin_width) / (num_dims * math.log(2.0))
