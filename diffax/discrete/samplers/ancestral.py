"""Ancestral sampling: exact posterior steps q(x_s | x_t, x_0) averaged over the denoiser."""

from __future__ import annotations

import jax

from diffax.discrete.categorical import sample_categorical
from diffax.discrete.samplers.registry import register_sampler
from diffax.discrete.samplers.step import Model, State, Step, init_model


def ancestral_step(
    model: Model, key: jax.Array, x: jax.Array, state: State, t: jax.Array, s: jax.Array
) -> tuple[jax.Array, State]:
    """x_s ~ sum_x0 p_theta(x_0 | x_t) q(x_s | x_t, x_0) per token. `x`: `[B, L]`."""
    logits, state = model.denoiser_logits(state, x, t)
    return sample_categorical(key, model.process.posterior_logits(x, s, t, logits)), state


@register_sampler("ancestral")
def ancestral() -> Step:
    """Ancestral sampling with the denoiser posterior, for any process.

    From t to s each token moves to x_s ~ sum_x0 p_theta(x_0 | x_t) q(x_s | x_t, x_0). For an
    absorbing process this reveals each masked token with probability (alpha(s) - alpha(t)) /
    (1 - alpha(t)) (carry-over unmasking); with `cache=True` and a time-free denoiser the
    network is skipped on steps where nothing was revealed. One network evaluation per step.

    Returns:
      a `Step` for `diffax.discrete.sample` / `run_steps`.

    Reference: Austin et al. 2021 (D3PM); Sahoo et al. 2024 (MDLM), eq. 7 and caching.
    """
    return Step(
        init=init_model,
        step=ancestral_step,
        name="ancestral",
        reference="Austin et al. 2021 (D3PM); Sahoo et al. 2024 (MDLM), eq. 7",
    )
