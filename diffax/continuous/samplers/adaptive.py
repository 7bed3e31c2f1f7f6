"""Adaptive-step samplers: an embedded Runge-Kutta PF-ODE solver and the "Gotta Go Fast" SDE solver.

Each step integrates adaptively from t to s, so on the 2-point grid `[t_max, t_min]` (what
`sample` builds for them with `num_steps=1`) one step is the whole solve; on a longer grid every
interval is a separate adaptive solve. `info["nfe"]` is what was spent; `info["num_steps"]`
(attempted steps or iterations, summed over intervals) and `info["success"]` come from the state.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from diffax.continuous.adaptive_rk import solve_adaptive
from diffax.continuous.samplers.registry import register_sampler
from diffax.continuous.samplers.sde import reverse_sde_drift
from diffax.continuous.samplers.step import Step
from diffax.core.arrays import expand_as, float_dtype, sum_event


def _solve_state(model, x, ts):
    del model, x, ts
    return {"num_steps": jnp.int32(0), "success": jnp.bool_(True)}


def _add_solve(state: dict, num_steps: jax.Array, success: jax.Array) -> dict:
    return {"num_steps": state["num_steps"] + num_steps, "success": state["success"] & success}


def _solve_info(state: dict) -> dict:
    return dict(state)


@register_sampler("adaptive_ode")
def adaptive_ode(
    rtol: float = 1e-3,
    atol: float = 1e-3,
    method: str = "bosh3",
    backend: str = "own",
    max_steps: int = 4096,
) -> Step:
    """PF-ODE from t to s with an adaptive embedded RK method (deterministic).

    NFE is set by the tolerances (reported in `info["nfe"]`, with `info["num_steps"]` attempted
    steps and `info["success"]`).

    Args:
      rtol, atol: tolerances of the step-size controller.
      method: "bosh3" (default: cheapest per step at sampling tolerances, see
        docs/continuous.md), "dopri5", or "tsit5" (diffrax only).
      backend: "own" (default) or "diffrax"; see `diffax.continuous.adaptive_rk`.
      max_steps: cap on attempted steps per interval.
    """

    def step(model, key, x, state, t, s):
        uncounted = model.uncounted  # called inside the solver's while_loop

        def velocity(t, y):
            return uncounted.velocity(y, t)

        x, stats = solve_adaptive(
            velocity,
            x,
            t,
            s,
            method=method,
            backend=backend,
            rtol=rtol,
            atol=atol,
            max_steps=max_steps,
        )
        model.count(stats.nfe)
        return x, _add_solve(state, stats.num_steps, stats.success)

    return Step(
        _solve_state,
        step,
        evals_per_step=float("nan"),
        name="adaptive_ode",
        reference="Song et al. 2021, SDEs (PF-ODE with RK45); Dormand & Prince 1980",
        info=_solve_info,
    )


@register_sampler("adaptive_sde")
def adaptive_sde(
    rtol: float = 0.05,
    atol: float = 0.01,
    h_init: float = 0.01,
    safety: float = 0.9,
    exponent: float = 0.9,
    max_iters: int = 4096,
    brownian_tol: float = 1e-5,
) -> Step:
    """Adaptive reverse-SDE solver: Euler-Maruyama + stochastic improved Euler as error estimate.

    Per example (each has its own time and step size, as in the paper), with the Brownian
    increment sqrt(h) z over [t - h, t] of a per-example Brownian path (from the step key):
    `x' = x + h F(x, t) + sqrt(h) g(t) z`, `x~ = x + h F(x', t - h) + sqrt(h) g(t - h) z`,
    `x'' = (x' + x~)/2`; the step is accepted if
    `E = |(x' - x'') / max(atol, rtol max(|x'|, |x'_prev|))|_2 / sqrt(d) <= 1`, and
    `h <- min(t - t_min, safety h E^-exponent)`. Each iteration makes 2 batched network
    evaluations; the loop ends when every example reaches s.

    Args:
      rtol, atol: epsilon_rel and epsilon_abs of the paper (atol in data units; the paper's 0.0078
        is for images in [-1, 1]).
      h_init: first step size; safety, exponent: theta and r of the paper.
      max_iters: cap on loop iterations per interval (`info["success"]` is False if reached).
      brownian_tol: time resolution of the per-example virtual Brownian trees
        (`diffrax.VirtualBrownianTree`) that supply the noise.
    """

    def step(model, key, x, state, t_start, t_end):
        import diffrax  # Brownian paths; imported lazily like in adaptive_rk

        process, uncounted = model.process, model.uncounted  # used inside the while_loop
        batch = x.shape[0]
        d = x[0].size
        path_keys = jax.random.split(key, batch)

        def brownian_increment(k, t_hi, t_lo):
            # One Brownian path per example, queried consistently: a rejected step and its
            # smaller retry see the same path (Rackauckas & Nie 2017). Redrawing fresh noise after
            # a rejection would bias the samples, since acceptance depends on the noise.
            path = diffrax.VirtualBrownianTree(
                t_end, t_start, tol=brownian_tol, shape=x.shape[1:], key=k
            )
            return path.evaluate(t_lo, t_hi)

        def drift(y, t):  # -(reverse SDE drift): the direction of decreasing t, t: [B]
            return -reverse_sde_drift(process, *uncounted.denoise(y, t), t, 1.0)

        def cond(carry):
            _, t, _, _, _, it = carry
            return jnp.any(t > t_end) & (it < max_iters)

        def body(carry):
            x, t, h, x_prev, nfe, it = carry
            active = t > t_end
            h = jnp.minimum(h, t - t_end)
            s = jnp.where(active, jnp.maximum(t - h, t_end), t)
            noise = jax.vmap(brownian_increment)(path_keys, t, s)  # variance h per element
            hx = expand_as(h, x)
            x1 = x + hx * drift(x, t) + expand_as(process.g(t), x) * noise
            x_tilde = x + hx * drift(x1, s) + expand_as(process.g(s), x) * noise
            x2 = 0.5 * (x1 + x_tilde)
            delta = jnp.maximum(atol, rtol * jnp.maximum(jnp.abs(x1), jnp.abs(x_prev)))
            err = jnp.sqrt(sum_event(jnp.square((x1 - x2) / delta)) / d)
            accept = active & (err <= 1.0)
            x = jnp.where(expand_as(accept, x), x2, x)
            x_prev = jnp.where(expand_as(accept, x), x1, x_prev)
            t = jnp.where(accept, s, t)
            # err = 0 (e.g. a step with zero drift and noise) must not produce an infinite
            # factor; the new step is capped by the remaining time anyway.
            h_new = safety * h * jnp.maximum(err, 1e-8) ** -exponent
            h = jnp.where(active, jnp.minimum(h_new, jnp.maximum(t - t_end, 0.0)), h)
            return x, t, h, x_prev, nfe + 2, it + 1

        t0 = jnp.full((batch,), t_start)
        h0 = jnp.full((batch,), h_init, float_dtype())
        carry = (x, t0, h0, x, jnp.int32(0), jnp.int32(0))
        x, t, _, _, nfe, it = jax.lax.while_loop(cond, body, carry)
        model.count(nfe)
        return x, _add_solve(state, it, jnp.all(t <= t_end))

    return Step(
        _solve_state,
        step,
        evals_per_step=float("nan"),
        name="adaptive_sde",
        uses_sde_t_max=True,
        reference="Jolicoeur-Martineau et al. 2021, Gotta Go Fast When Generating Data with SBMs",
        info=_solve_info,
    )
