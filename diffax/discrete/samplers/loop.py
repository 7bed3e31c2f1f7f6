"""The one reverse-time loop: a `Step` run over an explicit decreasing time grid.

`run_steps` draws x_1 from the prior, applies the step on every interval of `ts` but the last
one, which goes to t = 0 by drawing x_0 from the denoiser (`Step.final`, by default `denoise`),
restores fixed positions (infilling) after every step, keeps invalid tokens invalid, and returns
`info["nfe"]` (network evaluations made) and optionally the trajectory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from diffax.core import check_positive_int, check_shape, check_tokens, is_concrete
from diffax.discrete.categorical import (
    INVALID_TOKEN,
    sample_categorical,
    sample_categorical_where,
)
from diffax.discrete.parameterizations import ModelFn
from diffax.discrete.processes import Process
from diffax.discrete.samplers.grids import check_grid
from diffax.discrete.samplers.step import Model, State, Step


def check_sample_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """`shape` as `(B, L)` positive ints; a `ValueError` otherwise."""
    if len(shape) != 2:
        raise ValueError(f"shape must be (batch, length), got {shape}")
    return check_positive_int(shape[0], "shape[0]"), check_positive_int(shape[1], "shape[1]")


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
    fixed = check_fixed(process, shape, fixed_tokens, fixed_mask)
    if fixed is None:
        return lambda x: x
    tokens, mask = fixed
    return lambda x: jnp.where(mask, tokens, x)


def check_fixed(
    process: Process,
    shape: tuple[int, int],
    fixed_tokens: jax.Array | None,
    fixed_mask: jax.Array | None,
) -> tuple[jax.Array, jax.Array] | None:
    """Checks infilling / prompt arguments; `(tokens int32, mask bool)` or None when both None.

    Both or neither must be given, each of `shape`; tokens in [0, V); the mask a bool array.
    """
    if fixed_tokens is None and fixed_mask is None:
        return None
    if fixed_tokens is None or fixed_mask is None:
        raise ValueError("infilling needs both fixed_tokens and fixed_mask (or neither)")
    check_shape(fixed_tokens, shape, "fixed_tokens")
    check_shape(fixed_mask, shape, "fixed_mask")
    check_tokens(fixed_tokens, process.vocab_size, "fixed_tokens")
    if jnp.asarray(fixed_mask).dtype != jnp.bool_:
        raise TypeError(f"fixed_mask must be a bool array, got {jnp.asarray(fixed_mask).dtype}")
    return jnp.asarray(fixed_tokens, jnp.int32), jnp.asarray(fixed_mask)


def denoise(
    model: Model, key: jax.Array, x: jax.Array, state: State, t: jax.Array
) -> tuple[jax.Array, State]:
    """The default last step: x_0 ~ p_theta(x_0 | x_t) per token, at t (scalar or `[B]`).

    For an absorbing process (`process.mask_id is not None`) only masked tokens are drawn
    (`sample_categorical_where`), and the network is not called when no token is masked.
    Returns `(x_0 [B, L], state)`.
    """
    mask_id = model.process.mask_id

    def draw(state):
        # Both draws are invariant to a constant per row: no log_softmax pass.
        logits, state = model.denoiser_logits(state, x, t, normalize=False)
        if mask_id is None:
            return sample_categorical(key, logits), state
        # Absorbing processes: the masked positions only, a few random words each.
        masked = x == mask_id
        return jnp.where(masked, sample_categorical_where(key, logits, masked), x), state

    if mask_id is None:
        return draw(state)
    return jax.lax.cond(jnp.any(x == mask_id), draw, lambda state: (x, state), state)


def finish_tokens(x: jax.Array, state: State, sampler: str) -> tuple[jax.Array, dict]:
    """Marks positions with a non-finite model output as `INVALID_TOKEN` and builds `info`.

    Under `jit` (or `vmap`) nothing leaves the device: the caller gets -1 at those positions (and
    wherever a step had no valid draw, see `sample_categorical`). In an eager call the tokens
    are concrete and any -1 is a `ValueError` naming the first affected position.
    Returns `(tokens [B, L] int32, {"nfe": int32})`.
    """
    x = jnp.where(state["bad"], INVALID_TOKEN, x).astype(jnp.int32)
    if is_concrete(x):
        tokens, bad = np.asarray(x), np.asarray(state["bad"])
        invalid = tokens < 0
        if invalid.any():
            b, pos = (int(i[0]) for i in np.nonzero(invalid))
            if bad.any():
                what = (
                    f"model_fn output is not finite (NaN or +inf) at {int(bad.sum())} of "
                    f"{bad.size} token positions"
                )
            else:
                what = "a sampling step had no valid probabilities (NaN or all zero)"
            raise ValueError(
                f"sampler {sampler!r}: {what}; {int(invalid.sum())} sampled tokens are invalid "
                f"(first: sequence {b}, position {pos}). Under jit such positions are returned "
                f"as {INVALID_TOKEN}."
            )
    return x, {"nfe": state["nfe"]}


def run_steps(
    key: jax.Array,
    step: Step,
    process: Process,
    model_fn: ModelFn,
    shape: tuple[int, int],
    ts: jax.Array,
    *,
    prediction: str = "denoiser",
    temperature: float = 1.0,
    top_p: float = 1.0,
    cache: bool = False,
    fixed_tokens: jax.Array | None = None,
    fixed_mask: jax.Array | None = None,
    trajectory: bool = False,
) -> tuple[jax.Array, dict[str, Any]]:
    """Runs a sampler `step` from t = ts[0] down to 0 with `lax.scan` (the one sampling loop).

    Interval i (t = ts[i] -> s = ts[i + 1]) is `step.step` for i < N - 1 and `step.final`
    (default `denoise`) for the last one. Per-interval keys are `fold_in(key, i)`; fixed
    positions are restored after every step; a token that became `INVALID_TOKEN` (no valid
    draw) stays so.

    Args:
      key: PRNG key.
      step: the sampler, a `Step` (e.g. `diffax.discrete.ancestral()`, or your own).
      process: the forward process the model was trained on.
      model_fn: `(tokens [B, L] int32, t [B]) -> [B, L, V]` network output.
      shape: `(B, L)`.
      ts: `[N + 1]` strictly decreasing times in [0, 1] ending at 0 (N >= 1), e.g.
        `time_grid(N)`; checked when concrete (`check_grid`).
      prediction: what `model_fn` outputs, "denoiser" or "concrete_score".
      temperature, top_p, cache: see `Model`.
      fixed_tokens, fixed_mask: `[B, L]` infilling context kept fixed (both or neither).
      trajectory: also return `info["trajectory"]`, `[N + 1, B, L]` int32: x at every grid time
        (entry 0 is the prior draw, entry N the returned tokens).

    Returns:
      `(tokens [B, L] int32, info)` with `info["nfe"]` (int32) the network evaluations made.
      Positions where the model output was not finite (NaN or +inf) raise a `ValueError` in an
      eager call; under `jit` they are returned as -1 (`INVALID_TOKEN`; check
      `jnp.all(tokens >= 0)`, e.g. with `jax.experimental.checkify`).
    """
    if not isinstance(step, Step):
        raise TypeError(f"step must be a diffax.discrete.Step, got {type(step).__name__}")
    shape = check_sample_shape(shape)
    ts = check_grid(ts)
    num_intervals = ts.shape[0] - 1
    model = Model(
        process, model_fn, prediction, shape, temperature=temperature, top_p=top_p, cache=cache
    )
    infill = make_infill(process, shape, fixed_tokens, fixed_mask)
    final = denoise if step.final is None else step.final
    key_prior, key_loop = jax.random.split(key)
    x = infill(process.sample_prior(key_prior, shape)).astype(jnp.int32)
    state = step.init(model, x, ts)

    def body(carry, i):
        x, state = carry
        t, s = ts[i], ts[i + 1]
        k = jax.random.fold_in(key_loop, i)
        x_new, state = jax.lax.cond(
            i == num_intervals - 1,
            lambda: final(model, k, x, state, t),
            lambda: step.step(model, k, x, state, t, s),
        )
        # Keep an invalid token invalid: later steps would otherwise draw a valid-looking id
        # from a state that no longer means anything.
        x = infill(jnp.where(x < 0, x, x_new)).astype(jnp.int32)
        return (x, state), (x if trajectory else None)

    (x_end, state), path = jax.lax.scan(body, (x, state), jnp.arange(num_intervals))
    tokens, info = finish_tokens(x_end, state, step.name)
    if trajectory:
        info["trajectory"] = jnp.concatenate([x[None], path[:-1], tokens[None]])
    return tokens, info
