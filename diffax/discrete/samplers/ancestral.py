"""Ancestral sampling: exact posterior steps q(x_s | x_t, x_0) averaged over the denoiser."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from diffax.discrete.categorical import (
    INVALID_TOKEN,
    bernoulli_32bit,
    row_top,
    sample_categorical,
    sample_categorical_where,
)
from diffax.discrete.processes import Process
from diffax.discrete.samplers.registry import register_sampler
from diffax.discrete.samplers.step import Model, State, Step, init_model


def reveals_by_bernoulli(process: Process) -> bool:
    """Whether `process` has an absorbing posterior drawn as reveal-then-class (`Masked`)."""
    return process.mask_id is not None and hasattr(process, "reveal_probability")


def masked_posterior_draw(
    process: Process,
    key: jax.Array,
    x: jax.Array,
    s: jax.Array,
    t: jax.Array,
    log_p0: jax.Array,
    extra: jax.Array | None = None,
) -> jax.Array:
    """The absorbing ancestral step as a reveal decision and a class draw.

    Each masked position is revealed with probability `process.reveal_probability(s, t)` (one
    32-bit word per position) as a draw from the denoiser; unmasked positions keep their token.
    This is the law of `sample_categorical(process.posterior_logits(x, s, t, log_p0))` without
    building the `[B, L, V + 1]` posterior or drawing a word per class. Classes are drawn only
    at the revealed positions (`sample_categorical_where`: gathered, a few words each). A masked
    position whose denoiser row holds NaN or +inf (the model's non-finite check, `row_top`,
    computed once for both) or has every class at -inf becomes `INVALID_TOKEN`, revealed or not
    (`run_steps` reports such positions as invalid anyway).

    Args:
      process: an absorbing process with `reveal_probability` (`reveals_by_bernoulli`).
      key: PRNG key. x: `[B, L]` int32 tokens at t. s, t: scalars or `[B]`, s < t.
      log_p0: `[B, L, V]` denoiser logits (a constant per position may be added).
      extra: optional `[B, L]` bool, masked positions revealed in addition (`remdm`), drawn
        from the same law; the reveal decisions and the class draw stay independent.

    Returns:
      `x_s`: `[B, L]` int32 tokens at s.
    """
    k_reveal, k_class = jax.random.split(key)
    masked = x == process.mask_id
    reveal_p = jnp.broadcast_to(process.reveal_probability(s, t), x.shape[:1])[:, None]
    reveal = bernoulli_32bit(k_reveal, reveal_p, x.shape)
    if extra is not None:
        reveal = reveal | extra
    invalid = ~jnp.isfinite(row_top(log_p0))
    x0 = sample_categorical_where(k_class, log_p0, masked & reveal)
    x0 = jnp.where(invalid, INVALID_TOKEN, x0)
    return jnp.where(masked & (reveal | invalid), x0, x).astype(jnp.int32)


def ancestral_step(
    model: Model, key: jax.Array, x: jax.Array, state: State, t: jax.Array, s: jax.Array
) -> tuple[jax.Array, State]:
    """x_s ~ sum_x0 p_theta(x_0 | x_t) q(x_s | x_t, x_0) per token. `x`: `[B, L]`."""
    process = model.process
    if reveals_by_bernoulli(process):
        # The class draw is invariant to a constant per row: no log_softmax pass.
        logits, state = model.denoiser_logits(state, x, t, normalize=False)
        return masked_posterior_draw(process, key, x, s, t, logits), state
    logits, state = model.denoiser_logits(state, x, t)
    return sample_categorical(key, process.posterior_logits(x, s, t, logits)), state


@register_sampler("ancestral")
def ancestral() -> Step:
    """Ancestral sampling with the denoiser posterior, for any process.

    From t to s each token moves to x_s ~ sum_x0 p_theta(x_0 | x_t) q(x_s | x_t, x_0). For an
    absorbing process this reveals each masked token with probability (alpha(s) - alpha(t)) /
    (1 - alpha(t)) (carry-over unmasking); with `cache=True` and a time-free denoiser the
    network is skipped on steps where nothing was revealed. One network evaluation per step.
    For `Masked` the step is drawn as one Bernoulli per position and one inverse-CDF class per
    revealed position (`masked_posterior_draw`): O(B L) random words, not O(B L V), and the
    full-vocabulary work only at the revealed positions.

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
