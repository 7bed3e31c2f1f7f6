"""Fixed-step probability-flow ODE solvers in t: Euler and Heun.

The PF-ODE `dx/dt = u(x, t) = alpha'(t) x0_hat + sigma'(t) eps_hat` shares its marginals with the
forward process. Song et al. 2021, Score-Based Generative Modeling through SDEs (section 4.3).
"""

from __future__ import annotations

from diffax.continuous.samplers.registry import register_sampler
from diffax.continuous.samplers.step import Step, no_state


@register_sampler("ode_euler")
def ode_euler() -> Step:
    """Explicit Euler on the PF-ODE in t (deterministic). NFE = N (+1 if `denoise`)."""

    def step(model, key, x, state, t, s):
        return x + (s - t) * model.velocity(x, t), state

    return Step(
        no_state,
        step,
        evals_per_step=1,
        name="ode_euler",
        grid="karras",
        reference="Song et al. 2021, SDEs (probability-flow ODE), explicit Euler",
    )


@register_sampler("ode_heun")
def ode_heun() -> Step:
    """Heun (explicit trapezoidal) on the PF-ODE in t (deterministic). NFE = 2N (+1)."""

    def step(model, key, x, state, t, s):
        d = model.velocity(x, t)
        x_euler = x + (s - t) * d
        return x + 0.5 * (s - t) * (d + model.velocity(x_euler, s)), state

    return Step(
        no_state,
        step,
        evals_per_step=2,
        name="ode_heun",
        grid="karras",
        reference="Karras et al. 2022, EDM (Heun's 2nd-order method on the PF-ODE)",
    )
