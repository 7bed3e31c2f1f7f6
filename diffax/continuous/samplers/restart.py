"""Restart sampling: a deterministic Heun pass, with K forward-noise "restarts" of one interval.

When the backward ODE reaches noise level s_lo, the sample is pushed forward to s_hi by the exact
forward transition (fresh Gaussian noise), then brought back by the ODE; repeated K times. The
added noise contracts the errors accumulated earlier while each pass stays deterministic.
Xu et al. 2023, Restart Sampling for Improving Generative Processes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from diffax.continuous.samplers.edm import (
    churn_scale,
    heun_step,
    noise_level,
    scaled_input,
    scaled_output,
    scaled_state,
    t_of_noise_level,
)
from diffax.continuous.samplers.registry import register_sampler
from diffax.continuous.samplers.step import Step
from diffax.core import is_concrete
from diffax.core.arrays import float_dtype


@register_sampler("restart")
def restart(
    restart_interval: tuple[float, float] = (0.06, 0.30),
    restart_iters: int = 1,
    restart_steps: int | None = None,
    rho: float = 7.0,
) -> Step:
    """Restart sampler with EDM-Heun ODE steps (in x/alpha, noise level s = sigma/alpha).

    NFE = 2N + restart_iters * 2 * restart_steps (+1 if `denoise`; see `edm_heun`).

    Args:
      restart_interval: `(s_lo, s_hi)` noise levels; the restart happens the first time the main
        pass reaches a grid level <= s_lo, and goes up to s_hi (capped at the level of the
        grid's first time). Xu et al. use [0.06, 0.30] on CIFAR-10. The step key supplies the
        restart noise.
      restart_iters: K, number of restarts.
      restart_steps: Heun steps of each backward restart pass (Karras spacing with `rho`);
        default max(1, N // 4).
      rho: Karras exponent of the restart passes.
    """
    s_lo_req, s_hi_req = restart_interval
    # NumPy, not jnp: inside jit, jnp comparisons of concrete values are traced.
    lo_hi = np.asarray(restart_interval) if all(map(is_concrete, restart_interval)) else None
    if lo_hi is not None and not 0.0 < lo_hi[0] < lo_hi[1]:
        raise ValueError(
            f"restart_interval = (s_lo, s_hi) needs 0 < s_lo < s_hi; got s_lo={s_lo_req}, "
            f"s_hi={s_hi_req}"
        )

    def init(model, x, ts):
        num_steps = ts.shape[0] - 1
        n_r = restart_steps if restart_steps is not None else max(1, num_steps // 4)
        t_hi = jnp.minimum(t_of_noise_level(model.process, s_hi_req), ts[0])
        # u: the restart pass's grid in [0, 1] (its length fixes the pass's number of steps).
        u = jnp.arange(n_r + 1, dtype=float_dtype()) / n_r
        return {**scaled_state(model, x, ts), "t_hi": t_hi, "u": u}

    def backward(model, y, t_from, t_to, s_from, s_to, u):
        lv = (s_from ** (1 / rho) + u * (s_to ** (1 / rho) - s_from ** (1 / rho))) ** rho
        lv = lv.at[0].set(s_from).at[-1].set(s_to)
        tt = t_of_noise_level(model.process, lv).at[0].set(t_from).at[-1].set(t_to)

        def body(carry, j):
            y, nfe = carry
            y, ev = heun_step(model, y, tt[j], lv[j], tt[j + 1], lv[j + 1])
            return (y, nfe + ev), None

        (y, nfe), _ = jax.lax.scan(body, (y, jnp.int32(0)), jnp.arange(u.shape[0] - 1))
        return y, nfe

    def step(model, key, x, state, t, s):
        levels, i, t_hi, u = state["levels"], state["i"], state["t_hi"], state["u"]
        s_hi = noise_level(model.process, t_hi)
        y = scaled_input(model, x, state, t)
        y, ev = heun_step(model, y, t, levels[i], s, levels[i + 1])
        s_next = levels[i + 1]

        def do_restarts(y):
            def one(k, carry):
                y, nfe = carry
                noise = jax.random.normal(jax.random.fold_in(key, k), y.shape, y.dtype)
                y = y + churn_scale(s_hi, s_next) * noise
                y, ev = backward(model, y, t_hi, s, s_hi, s_next, u)
                return y, nfe + ev

            return jax.lax.fori_loop(0, restart_iters, one, (y, jnp.int32(0)))

        crossing = (s_next <= s_lo_req) & (levels[i] > s_lo_req) & (s_next > 0) & (s_next < s_hi)
        y, ev_r = jax.lax.cond(crossing, do_restarts, lambda y: (y, jnp.int32(0)), y)
        model.count(ev + ev_r)
        return scaled_output(model, y, state, s)

    return Step(
        init,
        step,
        evals_per_step=2.5,
        name="restart",
        grid="karras",
        uses_sde_t_max=True,
        reference="Xu et al. 2023, Restart Sampling for Improving Generative Processes",
    )
