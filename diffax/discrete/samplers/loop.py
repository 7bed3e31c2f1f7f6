"""The reverse-time loop shared by the grid samplers, with infilling and the final denoise step."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from diffax.core import check_shape, check_tokens
from diffax.discrete.categorical import sample_categorical
from diffax.discrete.processes import Masked, Process
from diffax.discrete.samplers.model_calls import CallState, ModelCaller, finish_tokens
from diffax.discrete.samplers.registry import time_grid

# rule(key, x, out, state, t, s) -> (x_s, state): one reverse step t -> s given the network
# output `out` at (x, t); it may call the network again through the caller state (corrector).
StepRule = Callable[..., tuple[jax.Array, CallState]]
# first_step(key, x, state, t, s, last) -> (x_s, state): the whole first step t_0 = 1 -> t_1,
# network call included (`last`: it is also the final denoising step, num_steps = 1).
FirstStep = Callable[..., tuple[jax.Array, CallState]]


def make_infill(
    process: Process,
    shape: tuple[int, int],
    fixed_tokens: jax.Array | None,
    fixed_mask: jax.Array | None,
) -> Callable[[jax.Array], jax.Array]:
    """Returns `x -> where(fixed_mask, fixed_tokens, x)` after checking both arguments.

    Args:
      fixed_tokens: `[B, L]` int32 clean ids in [0, V) (only read where `fixed_mask`).
      fixed_mask: `[B, L]` bool, True where the token is given (prompt / infilling context).
    """
    if fixed_tokens is None and fixed_mask is None:
        return lambda x: x
    if fixed_tokens is None or fixed_mask is None:
        raise ValueError("infilling needs both fixed_tokens and fixed_mask (or neither)")
    check_shape(fixed_tokens, shape, "fixed_tokens")
    check_shape(fixed_mask, shape, "fixed_mask")
    check_tokens(fixed_tokens, process.vocab_size, "fixed_tokens")
    if jnp.asarray(fixed_mask).dtype != jnp.bool_:
        raise TypeError(f"fixed_mask must be a bool array, got {jnp.asarray(fixed_mask).dtype}")
    tokens = jnp.asarray(fixed_tokens, jnp.int32)
    return lambda x: jnp.where(fixed_mask, tokens, x)


def denoise(
    process: Process, caller: ModelCaller, key: jax.Array, x: jax.Array, out: jax.Array, t
) -> jax.Array:
    """Draws x_0 ~ p_theta(x_0 | x_t) per token (for `Masked`, only at masked positions)."""
    x0 = sample_categorical(key, caller.denoiser(out, x, t))
    if isinstance(process, Masked):
        return jnp.where(x == process.mask_id, x0, x)
    return x0


def run_grid(
    key: jax.Array,
    process: Process,
    caller: ModelCaller,
    shape: tuple[int, int],
    num_steps: int,
    rule: StepRule,
    *,
    fixed_tokens: jax.Array | None = None,
    fixed_mask: jax.Array | None = None,
    first_step: FirstStep | None = None,
    sampler: str = "sampler",
) -> tuple[jax.Array, dict[str, Any]]:
    """Runs `rule` on the uniform grid from t = 1 to 0 with a final denoise step.

    Per-step keys are `fold_in(key, step)`; fixed positions are restored after every step.
    `first_step`, if given, replaces the network call and rule of step 0 (a step that needs
    more than the output at t_0, e.g. its time derivative where alpha(t_0) = 0). A token that
    became `INVALID_TOKEN` (no valid draw) stays so; positions with a non-finite model output
    are returned as `INVALID_TOKEN` under `jit` and are a `ValueError` eagerly (`finish_tokens`).
    Returns `(tokens [B, L] int32, {"nfe": int32})`.
    """
    infill = make_infill(process, shape, fixed_tokens, fixed_mask)
    grid = time_grid(num_steps)
    key_prior, key_loop = jax.random.split(key)
    x = infill(process.sample_prior(key_prior, shape))

    def settle(x_old, x_new):
        # Keep an invalid token invalid: later steps would otherwise draw a valid-looking id
        # from a state that no longer means anything.
        return infill(jnp.where(x_old < 0, x_old, x_new)).astype(jnp.int32)

    def body(carry, i):
        x, state = carry
        t, s = grid[i], grid[i + 1]
        k = jax.random.fold_in(key_loop, i)
        out, state = caller(state, x, t)
        x_new, state = jax.lax.cond(
            i == num_steps - 1,
            lambda: (denoise(process, caller, k, x, out, t), state),
            lambda: rule(k, x, out, state, t, s),
        )
        return (settle(x, x_new), state), None

    state = caller.init()
    start = 0
    if first_step is not None:
        k = jax.random.fold_in(key_loop, 0)
        x_new, state = first_step(k, x, state, grid[0], grid[1], num_steps == 1)
        x, start = settle(x, x_new), 1
    (x, state), _ = jax.lax.scan(body, (x, state), jnp.arange(start, num_steps))
    return finish_tokens(x, state, sampler)
