"""Confidence-ordered unmasking (MaskGIT / LLaDA low-confidence remasking), with blocks."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from diffax.core import check_choice, check_number, check_positive_int
from diffax.discrete.categorical import sample_categorical
from diffax.discrete.samplers.masked_only import require_absorbing
from diffax.discrete.samplers.registry import register_sampler
from diffax.discrete.samplers.step import Model, State, Step

CONFIDENCES = ("prob", "margin", "random")


def _confidence(kind: str, key: jax.Array, log_p: jax.Array, x0: jax.Array) -> jax.Array:
    """`[B, L]` scores: higher is revealed first."""
    if kind == "random":
        return jax.random.uniform(key, x0.shape)
    probs = jax.nn.softmax(log_p, axis=-1)
    if kind == "prob":
        return jnp.take_along_axis(probs, x0[..., None], axis=-1)[..., 0]
    top2 = jax.lax.top_k(probs, 2)[0]
    return top2[..., 0] - top2[..., 1]


def _block_size(length: int, block_length: int | None, num_steps: int) -> tuple[int, int]:
    """`(block, steps_per_block)`, checking that blocks tile the sequence and the steps."""
    block = length if block_length is None else block_length
    if length % block:
        raise ValueError(f"block_length={block} must divide the sequence length {length}")
    num_blocks = length // block
    if num_steps % num_blocks:
        raise ValueError(
            f"num_steps={num_steps} must be a multiple of the number of blocks {num_blocks}"
        )
    return block, num_steps // num_blocks


@register_sampler("confidence")
def confidence(
    confidence: str = "prob",
    block_length: int | None = None,
    threshold: float | None = None,
) -> Step:
    """Reveal the most confident predictions first (low-confidence remasking; absorbing only).

    At each step every masked position draws x_0 ~ p_theta(x_0 | x_t); the k most confident are
    kept and the rest stay masked, with k set so that a fraction (1 - alpha(s)) / (1 - alpha(1))
    of the block's masked tokens remains after the step (the linear schedule reveals equally
    many tokens per step). With `block_length`, the sequence is generated block by block left to
    right (semi-autoregressive), `num_steps / num_blocks` steps per block. The model is called at
    the time t with 1 - alpha(t) = the current fraction of masked tokens, so only the number of
    grid intervals (num_steps) is used, not the grid's times. Ranking by the probability of the
    drawn token ("prob") favours likely draws, so the output does not converge to the data law
    as steps grow; orders that do not depend on the draws ("margin", "random") are exact with one
    token per step and an exact denoiser.

    With `threshold` (parallel decoding, Fast-dLLM), a step reveals every masked position of the
    current block whose confidence exceeds `threshold`, and at least the k the schedule asks for,
    so a block still completes on the grid; blocks whose tokens are confidently predicted finish
    in fewer steps. `threshold=1.0` reveals nothing extra ("prob" and "margin" never exceed 1):
    the same tokens as `threshold=None` for the same key.

    One network evaluation per step that can reveal something: a step where no sequence of the
    batch has a masked position it may reveal (its block is done, or k = 0 without a threshold)
    skips the network (`lax.cond`), and `info["nfe"]` counts only the calls made.

    Args:
      confidence: "prob" (probability of the drawn token), "margin" (top-1 minus top-2
        probability) or "random" (uniform order).
      block_length: length of semi-autoregressive blocks (divides L; num_blocks divides
        num_steps); None for one block.
      threshold: None, or a confidence level in (0, 1] (may be traced, e.g. a sweep under
        `jit`): also reveal every candidate whose confidence exceeds it.

    Returns:
      a `Step` for `diffax.discrete.sample` / `run_steps`.

    Reference: Chang et al. 2022 (MaskGIT); Nie et al. 2025 (LLaDA), low-confidence remasking
    and semi-autoregressive blocks; Wu et al. 2025 (Fast-dLLM), sec. 3.3, confidence-aware
    parallel decoding.
    """
    check_choice(confidence, CONFIDENCES, "confidence")
    if block_length is not None:
        check_positive_int(block_length, "block_length")
    if threshold is not None:
        check_number(threshold, "threshold", low=0.0, high=1.0, high_open=False)

    def init(model: Model, x: jax.Array, ts: jax.Array) -> State:
        require_absorbing(model.process, "confidence")
        _, steps_per_block = _block_size(x.shape[1], block_length, ts.shape[0] - 1)
        return {
            **model.init(),
            "i": jnp.zeros((), jnp.int32),
            "steps_per_block": jnp.asarray(steps_per_block, jnp.int32),
            "n_start": jnp.zeros(x.shape[:1], jnp.int32),
        }

    def step(model: Model, key: jax.Array, x: jax.Array, state: State, t=None, s=None):
        del t, s
        process, schedule = model.process, model.process.schedule
        block = x.shape[1] if block_length is None else block_length
        i, steps_per_block = state["i"], state["steps_per_block"]
        b, j = i // steps_per_block, i % steps_per_block
        s = 1.0 - (j + 1) / steps_per_block
        in_block = (jnp.arange(x.shape[1]) // block == b)[None, :]
        candidates = (x == process.mask_id) & in_block
        n_now = jnp.sum(candidates, axis=-1)
        n_start = jnp.where(j == 0, n_now, state["n_start"])
        keep_masked = jnp.round(
            n_start * schedule.one_minus_alpha(s) / schedule.one_minus_alpha(1.0)
        )
        k = jnp.clip(n_now - keep_masked.astype(jnp.int32), 0, n_now)
        state = {**state, "i": i + 1, "n_start": n_start}
        # Without a threshold nothing changes when k = 0; with one, any candidate may pass it.
        active = n_now > 0 if threshold is not None else k > 0

        def reveal(state):
            k_x0, k_conf = jax.random.split(key)
            # The model sees the time whose masking level matches the current fraction of
            # masks, so time-conditioned models get consistent inputs also across blocks.
            frac = jnp.mean((x == process.mask_id).astype(jnp.float32), axis=-1)
            t_model = jnp.clip(schedule.inverse_alpha(1.0 - frac), 0.0, 1.0)
            log_p, state = model.denoiser_logits(state, x, t_model)
            x0 = sample_categorical(k_x0, log_p, method="inverse_cdf")
            conf = _confidence(confidence, k_conf, log_p, x0)
            score = jnp.where(candidates, conf, -jnp.inf)
            rank = jnp.argsort(jnp.argsort(-score, axis=-1), axis=-1)
            chosen = rank < k[:, None]
            if threshold is not None:
                chosen = chosen | (conf > threshold)
            return jnp.where(candidates & chosen, x0, x).astype(jnp.int32), state

        return jax.lax.cond(jnp.any(active), reveal, lambda state: (x, state), state)

    return Step(
        init=init,
        step=step,
        name="confidence",
        final=step,
        reference="Chang et al. 2022 (MaskGIT); Nie et al. 2025 (LLaDA); Wu et al. 2025",
    )
