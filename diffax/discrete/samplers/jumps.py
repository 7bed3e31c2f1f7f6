"""Jump probabilities from frozen reverse rates, shared by the CTMC Euler and tau-leaping steps."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from diffax.discrete.categorical import sample_categorical
from diffax.discrete.samplers.step import Model, State

# step_logits(scale [B], log_rel [B, L, S], x [B, L], h) -> [B, L, S] logits of the next state.
StepLogits = Callable[[jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]


def jump_parts(scale: jax.Array, log_rel: jax.Array, h: jax.Array):
    """Expected number of jumps lam = h * total rate `[B, L, 1]`, and log destination weights."""
    lse = jax.nn.logsumexp(log_rel, axis=-1, keepdims=True)
    has = jnp.isfinite(lse)
    lam = jnp.where(has, h * scale.reshape(-1, 1, 1) * jnp.exp(jnp.where(has, lse, 0.0)), 0.0)
    return lam, log_rel - jnp.where(has, lse, 0.0)


def rate_step(step_logits: StepLogits):
    """`Step.step` that applies `step_logits(scale, log_rel, x, t - s)` to the reverse rates."""

    def step(model: Model, key: jax.Array, x: jax.Array, state: State, t, s):
        out, state = model(state, x, t)
        scale, log_rel = model.rates(out, x, t)
        return sample_categorical(key, step_logits(scale, log_rel, x, t - s)), state

    return step
