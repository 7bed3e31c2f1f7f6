"""DEIS tAB: the exponential integrator of the PF-ODE in eps prediction with Adams-Bashforth
extrapolation of eps.

In y = x/alpha and the EDM noise level rho = sigma/alpha = exp(-l) (l = logSNR / 2) the PF-ODE
is dy/drho = eps_hat, so a step from rho_t to rho_s is exactly `y_s = y_t + int eps_hat drho`.
tAB-p replaces eps_hat by the Lagrange polynomial in l through the current and p - 1 previous
evaluations (diffusers' "logrho" DEIS, a polynomial in log rho) and integrates it exactly: with
u = l - l_t in [0, h], `int eps drho = -rho_t int_0^h e^(-u) P(u) du`, whose moments
`I_k = int_0^h e^(-u) u^k du` have a closed form. The result is written as
`x_s = alpha_s x0_hat + sigma_s eps_0 - alpha_s rho_t (higher-order terms)` so that the first
order is DDIM and the step to sigma = 0 (h = inf) stays finite.
Zhang & Chen 2023, Fast Sampling of Diffusion Models with Exponential Integrator (tAB-DEIS).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from diffax.continuous.samplers.registry import register_sampler
from diffax.continuous.samplers.step import Step, TMinPerStep, num_real_steps
from diffax.core.arrays import safe_div

# diffusers lowers the order of the last two steps only below this many steps.
_LOWER_ORDER_BELOW = 15


def exp_moments(h: jax.Array, k_max: int) -> list[jax.Array]:
    """`[I_0, ..., I_k_max]`, I_k = int_0^h e^(-u) u^k du, finite for h in [0, inf].

    By I_0 = -expm1(-h), I_k = k I_(k-1) - h^k e^(-h): for small h the difference loses
    relative accuracy but its absolute error stays ~ eps h^k, which is what the step needs.
    """
    finite = jnp.isfinite(h)
    h_f = jnp.where(finite, h, 0.0)
    decay = jnp.exp(-h)  # 0 at h = inf, so h^k e^(-h) -> 0 without inf * 0
    moments = [-jnp.expm1(-h)]
    for k in range(1, k_max + 1):
        moments.append(k * moments[-1] - h_f**k * decay)
    return moments


@register_sampler("deis")
def deis(order: int = 3, lower_order_final: bool = True) -> Step:
    """DEIS tAB-p: multistep exponential integrator with polynomial eps extrapolation. NFE = N.

    Deterministic; eps interpolated in l = logSNR/2 (equivalently log rho, rho = sigma/alpha)
    and integrated against d rho exactly, as diffusers' `DEISMultistepScheduler`
    (algorithm "deis", solver "logrho"). First order is DDIM (eta = 0). By default the grid
    ends at t = 0; the step to sigma = 0 is the exact limit of the formula (finite).

    Args:
      order: p in {1, 2, 3} (diffusers' `solver_order`).
      lower_order_final: with fewer than 15 steps, orders 1 and at most 2 on the last two
        steps (as diffusers).

    Returns:
      A `Step` (`evals_per_step=1`, default grid "logsnr", `to_zero=True`).
    """
    if isinstance(order, bool) or not isinstance(order, int) or order not in (1, 2, 3):
        raise ValueError(f"order must be 1, 2 or 3 (DEIS tAB-p), got {order!r}")

    def init(model, x, ts):
        process = model.process
        return {
            "lam": 0.5 * process.log_snr(ts),
            "i": jnp.int32(0),
            "n": num_real_steps(ts),
            "eps1": jnp.zeros_like(x),  # eps predictions at i - 1 and i - 2
            "eps2": jnp.zeros_like(x),
        }

    def step(model, key, x, state, t, s):
        del key
        process, lam, i = model.process, state["lam"], state["i"]
        # eps_hat from x0_hat: a step that uses both network outputs may make XLA evaluate the
        # network's tail twice (8x slower on the 64-D mixture benchmark).
        x0 = model.denoise(x, t)[0]
        eps = safe_div(x - process.alpha(t) * x0, process.sigma(t))
        eps1, eps2 = state["eps1"], state["eps2"]
        h = lam[i + 1] - lam[i]
        h0 = lam[i] - lam[jnp.maximum(i - 1, 0)]
        h1 = lam[jnp.maximum(i - 1, 0)] - lam[jnp.maximum(i - 2, 0)]
        p = jnp.minimum(order, i + 1)
        p = jnp.where(h0 > 0, p, 1)
        p = jnp.where((h1 > 0) | (p < 3), p, 2)
        if lower_order_final:
            n = state["n"]
            p = jnp.where(n < _LOWER_ORDER_BELOW, jnp.minimum(p, jnp.maximum(n - i, 1)), p)
        h_pos = jnp.where(h > 0, h, 1.0)
        h0 = jnp.where(p >= 2, h0, 1.0)
        h1 = jnp.where(p >= 3, h1, 1.0)
        moments = exp_moments(h_pos, 2)
        # Newton form of the interpolant in u: eps + d1 u + d2 u (u + h0).
        d1 = (eps - eps1) / h0
        d2 = (d1 - (eps1 - eps2) / h1) / (h0 + h1)
        higher = jnp.where(p >= 2, d1 * moments[1], 0.0)
        higher = higher + jnp.where(p >= 3, d2 * (moments[2] + h0 * moments[1]), 0.0)
        # alpha_s rho_t = alpha_s sigma_t / alpha_t; sigma_s = alpha_s rho_t e^(-h).
        a_s = process.alpha(s)
        x_new = a_s * x0 + process.sigma(s) * eps - a_s * jnp.exp(-lam[i]) * higher
        x_out = jnp.where(h > 0, x_new, x)
        return x_out, {**state, "i": i + 1, "eps1": eps, "eps2": eps1}

    return Step(
        init,
        step,
        evals_per_step=1,
        name="deis",
        grid="quadratic",
        t_min=TMinPerStep(0.3),
        reference="Zhang & Chen 2023, Fast Sampling of Diffusion Models with Exponential "
        "Integrator (tAB-DEIS)",
        to_zero=True,
    )
