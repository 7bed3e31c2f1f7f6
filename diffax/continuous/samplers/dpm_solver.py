"""DPM-Solver++: exponential integrators of the PF-ODE in data (x0) prediction.

With l(t) = logSNR(t) / 2 = log(alpha/sigma) and h = l(s) - l(t) > 0, the PF-ODE from t to s is
exactly `x_s = (sigma_s/sigma_t) x_t + sigma_s int_{l_t}^{l_s} e^l x0_hat(l) dl`; the solvers
below replace x0_hat by a polynomial in l through past (multistep) or intermediate (single-step)
evaluations. All coefficients are written with `expm1`, so the final step to sigma = 0 (h large)
and tiny steps (h small) stay finite and accurate in float32.
Lu et al. 2022, DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic Models.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from diffax.continuous.processes import GaussianProcess
from diffax.continuous.samplers.registry import register_sampler
from diffax.continuous.samplers.step import (
    Step,
    TMinPerStep,
    is_final_to_zero,
    num_real_steps,
)


def _half_logsnr(process: GaussianProcess, t):
    return 0.5 * process.log_snr(t)


def _first_order(process, x, x0, t, s, h):
    """x_s = (sigma_s / sigma_t) x_t - alpha_s expm1(-h) x0 (= DDIM)."""
    ratio = jnp.exp(process.log_sigma(s) - process.log_sigma(t))
    return ratio * x - process.alpha(s) * jnp.expm1(-h) * x0


def _grid_state(model, x, ts):
    """The half-logSNR of the whole grid (computed once), the step index and the number of
    real (moving) steps of a possibly padded grid."""
    return {"lam": _half_logsnr(model.process, ts), "i": jnp.int32(0), "n": num_real_steps(ts)}


def _multistep(order: int, lower_order_final: bool, name: str, reference: str) -> Step:
    def init(model, x, ts):
        # x0 predictions at grid points i - 1 and i - 2 (the multistep history).
        return {**_grid_state(model, x, ts), "x0_1": jnp.zeros_like(x), "x0_2": jnp.zeros_like(x)}

    def step(model, key, x, state, t, s):
        process, lam, i = model.process, state["lam"], state["i"]
        num_steps = state["n"]
        x0_1, x0_2 = state["x0_1"], state["x0_2"]
        x0 = model.denoise(x, t)[0]
        h = lam[i + 1] - lam[i]
        h0 = lam[i] - lam[jnp.maximum(i - 1, 0)]
        h1 = lam[jnp.maximum(i - 1, 0)] - lam[jnp.maximum(i - 2, 0)]
        # A grid may repeat a time (e.g. a logSNR grid whose end is clipped to t = 0): such a step
        # is the identity, and a zero-length previous interval cannot serve as a difference.
        moving = h > 0
        h = jnp.where(moving, h, 1.0)
        step_order = jnp.minimum(order, i + 1)
        step_order = jnp.where(h0 > 0, step_order, 1)
        step_order = jnp.where((h1 > 0) | (step_order < 3), step_order, 2)
        # With few steps the highest order is unstable at the last (largest-h) steps: the
        # official implementation lowers the order there when num_steps < 10.
        if lower_order_final:
            lowered = jnp.minimum(step_order, num_steps - i)
            step_order = jnp.where(num_steps < 10, lowered, step_order)
        # The step to sigma = 0 (h = inf up to the logSNR clip) is x0_hat: first order.
        final = is_final_to_zero(process, s)
        step_order = jnp.where(final, 1, step_order)
        h0 = jnp.where(final, h, h0)  # keeps the unused higher-order terms finite
        h1 = jnp.where(final, h, h1)
        phi1 = jnp.expm1(-h)
        phi2 = phi1 / h + 1.0
        phi3 = phi2 / h - 0.5
        ratio = jnp.exp(process.log_sigma(s) - process.log_sigma(t))
        a_s = process.alpha(s)
        r0 = h0 / h
        d1_0 = (x0 - x0_1) / jnp.where(step_order >= 2, r0, 1.0)
        # Second order (DPM-Solver++(2M), Lu et al. 2022, Algorithm 2).
        x2 = ratio * x - a_s * phi1 * (x0 + 0.5 * d1_0)
        if order >= 3:
            r1 = h1 / h
            d1_1 = (x0_1 - x0_2) / jnp.where(step_order >= 3, r1, 1.0)
            denom = jnp.where(step_order >= 3, r0 + r1, 1.0)
            # d1 ~ h x0', d2 ~ h^2 x0'' (divided differences on the non-uniform l-grid). The
            # reference code weights phi3 by half of d2, which is not exact for quadratic x0(l);
            # this weighting is (checked in tests/continuous/test_samplers.py).
            d1 = d1_0 + r0 / denom * (d1_0 - d1_1)
            d2 = 2.0 * (d1_0 - d1_1) / denom
            x3 = ratio * x - a_s * phi1 * x0 + a_s * phi2 * d1 - a_s * phi3 * d2
        else:
            x3 = x2
        x1 = ratio * x - a_s * phi1 * x0
        x_new = jnp.where(step_order >= 3, x3, jnp.where(step_order == 2, x2, x1))
        x = jnp.where(moving, x_new, x)
        return x, {**state, "i": i + 1, "x0_1": x0, "x0_2": x0_1}

    return Step(
        init,
        step,
        evals_per_step=1,
        name=name,
        grid="quadratic",
        t_min=TMinPerStep(0.3),
        reference=reference,
        to_zero=True,
    )


@register_sampler("dpm_solver_pp_2m")
def dpm_solver_pp_2m(lower_order_final: bool = True) -> Step:
    """DPM-Solver++(2M): second-order multistep (deterministic). NFE = N.

    The two previous x0 predictions are kept in the step state. By default the grid ends at
    t = 0 and the last step (first order there) is x0_hat, with no extra evaluation; with
    `denoise=True` the grid ends at t_min and the final denoising is DPM-Solver's
    `denoise_to_zero` (one more NFE).

    Args:
      lower_order_final: first order on the last step when N < 10 (as the reference code).
    """
    return _multistep(
        2, lower_order_final, "dpm_solver_pp_2m", "Lu et al. 2022, DPM-Solver++ (2M, Algorithm 2)"
    )


@register_sampler("dpm_solver_pp_3m")
def dpm_solver_pp_3m(lower_order_final: bool = True) -> Step:
    """DPM-Solver++(3M): third-order multistep (deterministic). NFE = N (+1 if `denoise`).

    Args:
      lower_order_final: orders 2 and 1 on the last two steps when N < 10.
    """
    return _multistep(
        3, lower_order_final, "dpm_solver_pp_3m", "Lu et al. 2022, DPM-Solver++ (3M multistep)"
    )


@register_sampler("dpm_solver_pp_2s")
def dpm_solver_pp_2s(r: float = 0.5) -> Step:
    """DPM-Solver++(2S): second-order single-step with an intermediate point at l_t + r h.

    Deterministic. NFE = 2N, or 2N - 1 when the last step goes to t = 0 (it is x0_hat there);
    +1 with `denoise=True`.

    Args:
      r: in (0, 1], places the intermediate evaluation (0.5: midpoint in logSNR).
    """

    def step(model, key, x, state, t, s):
        process, lam, i = model.process, state["lam"], state["i"]
        h = lam[i + 1] - lam[i]
        x0 = model.denoise(x, t)[0]

        def second_order(_):
            t_mid = process.t_from_log_snr(2.0 * (lam[i] + r * h))
            x_mid = _first_order(process, x, x0, t, t_mid, _half_logsnr(process, t_mid) - lam[i])
            x0_mid = model.uncounted.denoise(x_mid, t_mid)[0]
            d = (1.0 - 0.5 / r) * x0 + (0.5 / r) * x0_mid
            return d, jnp.int32(1)

        # The step to sigma = 0 is x0_hat itself: no intermediate evaluation (one NFE).
        d, extra = jax.lax.cond(
            is_final_to_zero(process, s), lambda _: (x0, jnp.int32(0)), second_order, None
        )
        model.count(extra)
        x_new = _first_order(process, x, d, t, s, h)
        return jnp.where(h > 0, x_new, x), {**state, "i": i + 1}

    return Step(
        _grid_state,
        step,
        evals_per_step=2,
        name="dpm_solver_pp_2s",
        grid="quadratic",
        t_min=TMinPerStep(0.3),
        reference="Lu et al. 2022, DPM-Solver++ (2S, Algorithm 1)",
        to_zero=True,
    )
