"""Confidence-ordered unmasking (MaskGIT / LLaDA low-confidence remasking), with blocks."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from diffax.core import check_choice, check_positive_int
from diffax.discrete.categorical import sample_categorical
from diffax.discrete.parameterizations import ModelFn
from diffax.discrete.processes import Masked
from diffax.discrete.samplers.loop import make_infill
from diffax.discrete.samplers.masked_only import require_masked
from diffax.discrete.samplers.model_calls import ModelCaller, finish_tokens
from diffax.discrete.samplers.registry import register_sampler

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


@register_sampler("confidence")
def confidence(
    key: jax.Array,
    process: Masked,
    model_fn: ModelFn,
    shape: tuple[int, int],
    *,
    num_steps: int,
    prediction: str = "denoiser",
    confidence: str = "prob",
    block_length: int | None = None,
    temperature: float = 1.0,
    top_p: float = 1.0,
    cache: bool = False,
    fixed_tokens: jax.Array | None = None,
    fixed_mask: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, Any]]:
    """Reveal the most confident predictions first (low-confidence remasking).

    At each step every masked position draws x_0 ~ p_theta(x_0 | x_t); the k most confident are
    kept and the rest stay masked, with k set so that a fraction (1 - alpha(s)) / (1 - alpha(1))
    of the block's masked tokens remains after the step (the linear schedule reveals equally
    many tokens per step). With `block_length`, the sequence is generated block by block left to
    right (semi-autoregressive), `num_steps / num_blocks` steps per block. The model is called at
    the time t with 1 - alpha(t) = the current fraction of masked tokens. Ranking by the
    probability of the drawn token ("prob") favours likely draws, so the output does not
    converge to the data law as steps grow; orders that do not depend on the draws ("margin",
    "random") are exact with one token per step and an exact denoiser.

    Args:
      confidence: "prob" (probability of the drawn token), "margin" (top-1 minus top-2
        probability) or "random" (uniform order).
      block_length: length of semi-autoregressive blocks (divides L; num_blocks divides
        num_steps); None for one block.
      Other arguments: as `ancestral` (`Masked` only).

    Returns:
      `(tokens [B, L] int32, {"nfe": int32})`. Positions where the model output was not finite
      (NaN or +inf) raise a `ValueError` in an eager call; under `jit` they are returned as -1
      (`INVALID_TOKEN`; check `jnp.all(tokens >= 0)`, e.g. with `jax.experimental.checkify`).

    Reference: Chang et al. 2022 (MaskGIT); Nie et al. 2025 (LLaDA), low-confidence remasking
    and semi-autoregressive blocks.
    """
    require_masked(process, "confidence")
    check_choice(confidence, CONFIDENCES, "confidence")
    batch, length = shape
    block = length if block_length is None else check_positive_int(block_length, "block_length")
    if length % block:
        raise ValueError(f"block_length={block} must divide the sequence length {length}")
    num_blocks = length // block
    if num_steps % num_blocks:
        raise ValueError(
            f"num_steps={num_steps} must be a multiple of the number of blocks {num_blocks}"
        )
    steps_per_block = num_steps // num_blocks
    caller = ModelCaller(
        process, model_fn, prediction, shape, temperature=temperature, top_p=top_p, cache=cache
    )
    infill = make_infill(process, shape, fixed_tokens, fixed_mask)
    key_prior, key_loop = jax.random.split(key)
    x = infill(process.sample_prior(key_prior, shape))
    block_of = jnp.arange(length) // block
    one_minus_1 = process.schedule.one_minus_alpha(1.0)

    def body(carry, i):
        x, n_start, state = carry
        b, j = i // steps_per_block, i % steps_per_block
        s = 1.0 - (j + 1) / steps_per_block
        in_block = (block_of == b)[None, :]
        candidates = (x == process.mask_id) & in_block
        n_now = jnp.sum(candidates, axis=-1)
        n_start = jnp.where(j == 0, n_now, n_start)
        keep_masked = jnp.round(n_start * process.schedule.one_minus_alpha(s) / one_minus_1)
        k = jnp.clip(n_now - keep_masked.astype(jnp.int32), 0, n_now)
        k_x0, k_conf = jax.random.split(jax.random.fold_in(key_loop, i))
        # The model sees the time whose masking level matches the current fraction of masks,
        # so time-conditioned models get consistent inputs also across semi-AR blocks.
        frac = jnp.mean((x == process.mask_id).astype(jnp.float32), axis=-1)
        t_model = jnp.clip(process.schedule.inverse_alpha(1.0 - frac), 0.0, 1.0)
        out, state = caller(state, x, t_model)
        log_p = caller.denoiser(out, x, t_model)
        x0 = sample_categorical(k_x0, log_p)
        score = jnp.where(candidates, _confidence(confidence, k_conf, log_p, x0), -jnp.inf)
        rank = jnp.argsort(jnp.argsort(-score, axis=-1), axis=-1)
        reveal = candidates & (rank < k[:, None])
        x = infill(jnp.where(reveal, x0, x)).astype(jnp.int32)
        return (x, n_start, state), None

    carry = (x, jnp.zeros((batch,), jnp.int32), caller.init())
    (x, _, state), _ = jax.lax.scan(body, carry, jnp.arange(num_steps))
    return finish_tokens(x, state, "confidence")
