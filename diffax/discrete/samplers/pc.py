"""Predictor-corrector sampling: a reverse step, then corrector steps that keep p_t invariant."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from diffax.core import check_choice, check_positive_int, is_concrete
from diffax.core.arrays import safe_log
from diffax.discrete.categorical import sample_categorical
from diffax.discrete.parameterizations import ModelFn
from diffax.discrete.processes import Process
from diffax.discrete.samplers.analytic import (
    tweedie_rule,
    uniform_limit_first_step,
    uses_uniform_limit,
)
from diffax.discrete.samplers.ancestral import posterior_rule
from diffax.discrete.samplers.loop import run_grid
from diffax.discrete.samplers.model_calls import ModelCaller
from diffax.discrete.samplers.rates import euler_logits, rate_rule, tau_leaping_logits
from diffax.discrete.samplers.registry import register_sampler

PREDICTORS = ("tau_leaping", "euler", "analytic", "ancestral")


@register_sampler("pc")
def pc(
    key: jax.Array,
    process: Process,
    model_fn: ModelFn,
    shape: tuple[int, int],
    *,
    num_steps: int,
    prediction: str = "denoiser",
    predictor: str = "tau_leaping",
    num_corrector_steps: int = 1,
    corrector_step_size: float = 1.0,
    temperature: float = 1.0,
    top_p: float = 1.0,
    cache: bool = False,
    fixed_tokens: jax.Array | None = None,
    fixed_mask: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, Any]]:
    """Predictor-corrector sampler.

    After each predictor step t -> s, `num_corrector_steps` Euler steps of length
    `corrector_step_size * (t - s)` follow the corrector CTMC with rates R_theta(s) + R(s)
    (reverse plus forward), whose stationary law is p_s; for `Masked` this remasks and
    re-reveals tokens. Each corrector step costs one network evaluation.

    Args:
      predictor: one of "tau_leaping", "euler", "analytic", "ancestral" ("analytic" takes the
        limit step of `analytic` where alpha(1) = 0).
      num_corrector_steps: corrector steps per predictor step (>= 0).
      corrector_step_size: corrector step length relative to the predictor step (> 0).
      Other arguments: as `ancestral`.

    Returns:
      `(tokens [B, L] int32, {"nfe": int32})`. Positions where the model output was not finite
      (NaN or +inf) raise a `ValueError` in an eager call; under `jit` they are returned as -1
      (`INVALID_TOKEN`; check `jnp.all(tokens >= 0)`, e.g. with `jax.experimental.checkify`).

    Reference: Campbell et al. 2022, sec. 4.2 (predictor-corrector); Song et al. 2021.
    """
    check_choice(predictor, PREDICTORS, "predictor")
    check_positive_int(num_corrector_steps, "num_corrector_steps", minimum=0)
    if is_concrete(corrector_step_size) and not float(corrector_step_size) > 0:
        raise ValueError(f"corrector_step_size must be > 0, got {corrector_step_size}")
    caller = ModelCaller(
        process, model_fn, prediction, shape, temperature=temperature, top_p=top_p, cache=cache
    )
    predict = {
        "tau_leaping": lambda: rate_rule(caller, tau_leaping_logits),
        "euler": lambda: rate_rule(caller, euler_logits),
        "analytic": lambda: tweedie_rule(process, caller),
        "ancestral": lambda: posterior_rule(process, caller),
    }[predictor]()

    def correct(key, x, state, t, s):
        for c in range(num_corrector_steps):
            out_c, state = caller(state, x, s)
            scale, log_rel = caller.rates(out_c, x, s)
            rates = scale.reshape(-1, 1, 1) * jnp.exp(log_rel) + process.forward_rates(x, s)
            h = corrector_step_size * (t - s)
            logits = euler_logits(jnp.ones_like(scale), safe_log(rates), x, h)
            x_new = sample_categorical(jax.random.fold_in(key, c + 1), logits)
            x = jnp.where(x < 0, x, x_new)  # an invalid token (-1) stays invalid
        return x, state

    def rule(key, x, out, state, t, s):
        x, state = predict(jax.random.fold_in(key, 0), x, out, state, t, s)
        return correct(key, x, state, t, s)

    first_step = None
    if predictor == "analytic" and uses_uniform_limit(process, prediction):
        # The analytic predictor's first step where alpha(1) = 0 (see `analytic`).
        limit = uniform_limit_first_step(process, caller)

        def first_step(key, x, state, t, s, last):
            x, state = limit(jax.random.fold_in(key, 0), x, state, t, s, last)
            return (x, state) if last else correct(key, x, state, t, s)

    return run_grid(
        key,
        process,
        caller,
        shape,
        num_steps,
        rule,
        fixed_tokens=fixed_tokens,
        fixed_mask=fixed_mask,
        first_step=first_step,
        sampler="pc",
    )
