"""Analytic (Tweedie) sampling from a concrete score."""

from __future__ import annotations

import jax

from diffax.discrete.categorical import sample_categorical
from diffax.discrete.samplers.ancestral import ancestral_step
from diffax.discrete.samplers.registry import register_sampler
from diffax.discrete.samplers.step import Model, State, Step, init_model


def tweedie_step(
    model: Model, key: jax.Array, x: jax.Array, state: State, t: jax.Array, s: jax.Array
) -> tuple[jax.Array, State]:
    """x_s ~ P(s->t)[., x_t] (r @ P(s->t)^-1)(.) per token, from the model's concrete score."""
    out, state = model(state, x, t)
    logits = model.process.tweedie_logits(x, s, t, model.score(out, x, t))
    return sample_categorical(key, logits), state


def analytic_step(
    model: Model, key: jax.Array, x: jax.Array, state: State, t: jax.Array, s: jax.Array
) -> tuple[jax.Array, State]:
    """The Tweedie step; the ancestral step for a denoiser or where alpha(t) = 0 (see below)."""
    if model.prediction == "denoiser":
        return ancestral_step(model, key, x, state, t, s)
    if model.score_limit is None:
        return tweedie_step(model, key, x, state, t, s)
    return jax.lax.cond(
        model.process.alpha(t) == 0.0,
        lambda: ancestral_step(model, key, x, state, t, s),
        lambda: tweedie_step(model, key, x, state, t, s),
    )


@register_sampler("analytic")
def analytic() -> Step:
    """Analytic sampler: per-token Tweedie steps p(x_s | x_t) from the concrete score.

    The step is exact for one token given the others (Tweedie's formula for a CTMC); negative
    weights from inexact scores are clipped. With a denoiser the Tweedie step on the implied
    score equals the ancestral posterior step, which is what is computed then.

    Where alpha(t) = 0 (the uniform process with a schedule reaching alpha(1) = 0, e.g. the
    default linear one) the score is identically 1 and the formula is 0/0; the first step is its
    limit, x_s ~ p(x_s | x_1) = p_s under the denoiser read from the score's first
    non-vanishing time derivative at t = 1 (`diffax.discrete.samplers.score_limit`). That step
    evaluates `model_fn` once with nested `jax.jvp` in t (one NFE, a few forward passes of
    compute), so `model_fn` must be differentiable in t there. A general rate matrix with
    alpha(1) = 0 keeps the clipped formula (its score approaches its limit like alpha^gap, not
    analytically in t). One network evaluation per step; use prediction="concrete_score" for a
    score network.

    Returns:
      a `Step` for `diffax.discrete.sample` / `run_steps`.

    Reference: Lou et al. 2024 (SEDD), sec. 4.2, Tweedie tau-leaping.
    """
    return Step(
        init=init_model,
        step=analytic_step,
        name="analytic",
        reference="Lou et al. 2024 (SEDD), sec. 4.2, Tweedie tau-leaping",
    )
