"""Predictor-corrector sampling: a reverse step, then corrector steps that keep p_t invariant."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from diffax.core import check_choice, check_positive_int, is_concrete
from diffax.core.arrays import safe_log
from diffax.discrete.categorical import sample_categorical
from diffax.discrete.samplers.analytic import analytic
from diffax.discrete.samplers.ancestral import ancestral
from diffax.discrete.samplers.euler import euler, euler_logits
from diffax.discrete.samplers.registry import register_sampler
from diffax.discrete.samplers.step import Model, State, Step
from diffax.discrete.samplers.tau_leaping import tau_leaping

#: Predictors `pc` accepts by name (any `Step` is accepted as an object).
PREDICTORS = {
    "tau_leaping": tau_leaping,
    "euler": euler,
    "analytic": analytic,
    "ancestral": ancestral,
}


@register_sampler("pc")
def pc(
    predictor: Step | str = "tau_leaping",
    num_corrector_steps: int = 1,
    corrector_step_size: float = 1.0,
) -> Step:
    """Predictor-corrector sampling for any process.

    After each predictor step t -> s, `num_corrector_steps` Euler steps of length
    `corrector_step_size * (t - s)` follow the corrector CTMC with rates R_theta(s) + R(s)
    (reverse plus forward), whose stationary law is p_s; for an absorbing process this remasks
    and re-reveals tokens. Each corrector step costs one network evaluation. The last interval
    is the predictor's (by default the denoising draw), without corrector.

    Args:
      predictor: a `Step` (e.g. `ancestral()`, or your own) or one of the names "tau_leaping",
        "euler", "analytic", "ancestral".
      num_corrector_steps: corrector steps per predictor step (>= 0).
      corrector_step_size: corrector step length relative to the predictor step (> 0).

    Returns:
      a `Step` for `diffax.discrete.sample` / `run_steps`.

    Reference: Campbell et al. 2022, sec. 4.2 (predictor-corrector); Song et al. 2021.
    """
    if isinstance(predictor, str):
        check_choice(predictor, tuple(PREDICTORS), "predictor")
        predictor = PREDICTORS[predictor]()
    elif not isinstance(predictor, Step):
        raise TypeError(
            f"predictor must be a Step or one of {tuple(PREDICTORS)}, got "
            f"{type(predictor).__name__}"
        )
    check_positive_int(num_corrector_steps, "num_corrector_steps", minimum=0)
    if is_concrete(corrector_step_size) and not float(corrector_step_size) > 0:
        raise ValueError(f"corrector_step_size must be > 0, got {corrector_step_size}")

    def correct(model: Model, key: jax.Array, x: jax.Array, state: State, t, s):
        for c in range(num_corrector_steps):
            out, state = model(state, x, s)
            scale, log_rel = model.rates(out, x, s)
            rates = scale.reshape(-1, 1, 1) * jnp.exp(log_rel) + model.process.forward_rates(x, s)
            h = corrector_step_size * (t - s)
            logits = euler_logits(jnp.ones_like(scale), safe_log(rates), x, h)
            x_new = sample_categorical(jax.random.fold_in(key, c + 1), logits)
            x = jnp.where(x < 0, x, x_new)  # an invalid token (-1) stays invalid
        return x, state

    def step(model: Model, key: jax.Array, x: jax.Array, state: State, t, s):
        x, state = predictor.step(model, jax.random.fold_in(key, 0), x, state, t, s)
        return correct(model, key, x, state, t, s)

    return Step(
        init=predictor.init,
        step=step,
        evals_per_step=predictor.evals_per_step + num_corrector_steps,
        name="pc",
        grid=predictor.grid,
        final=predictor.final,
        reference="Campbell et al. 2022, sec. 4.2 (predictor-corrector)",
    )
