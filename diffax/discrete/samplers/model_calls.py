"""Network calls inside samplers: output checks, temperature / top-p, p(x_0) caching, NFE.

Caching (`cache=True`) is for time-free denoisers of the masked process, whose exact p(x_0 | x_t)
does not depend on t: when x_t has not changed since the last call (no token revealed), the
previous output is reused. Under `jit` the call sits in `lax.cond`, so a skipped evaluation
really is skipped, and `nfe` counts only the evaluations made. The test is batch-wide: the
network runs if any sequence in the batch changed.

Non-finite outputs: every call marks the token positions whose output holds NaN or +inf (the
call state's `"bad"`, `[B, L]` bool, updated on device: no host round trip inside loops); the
samplers return those positions as `INVALID_TOKEN` (-1), and raise in an eager call
(`finish_tokens`). -inf is a valid output (an excluded class, a zero ratio).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from diffax.core import is_concrete
from diffax.discrete.categorical import INVALID_TOKEN, apply_temperature, top_p_filter
from diffax.discrete.losses.rate_kl import check_score_supported
from diffax.discrete.parameterizations import (
    ModelFn,
    as_denoiser,
    check_prediction,
    denoiser_to_score,
    evaluate,
)
from diffax.discrete.processes import Masked, Process

CallState = dict[str, Any]


class ModelCaller:
    """Wraps `model_fn` for a sampler.

    Args:
      process: the forward process. model_fn: `(tokens [B, L], t [B]) -> [B, L, V]`.
      prediction: "denoiser" or "concrete_score". shape: `(B, L)`.
      temperature: > 0, divides the denoiser logits. top_p: in (0, 1], nucleus filtering.
      cache: reuse the previous output when x_t has not changed (time-free masked denoisers).
    """

    def __init__(
        self,
        process: Process,
        model_fn: ModelFn,
        prediction: str,
        shape: tuple[int, int],
        *,
        temperature: float = 1.0,
        top_p: float = 1.0,
        cache: bool = False,
    ):
        check_prediction(prediction)
        check_score_supported(process, prediction)
        apply_temperature(jnp.zeros(()), temperature)
        top_p_filter(jnp.zeros((1,)), top_p)
        if cache and not (isinstance(process, Masked) and prediction == "denoiser"):
            raise ValueError(
                "cache=True needs process=Masked and prediction='denoiser' (a time-free "
                f"denoiser); got {type(process).__name__} with prediction={prediction!r}"
            )
        self.process, self.model_fn, self.prediction = process, model_fn, prediction
        self.shape, self.temperature, self.top_p, self.cache = shape, temperature, top_p, cache

    @property
    def tempered(self) -> bool:
        """Whether temperature / top-p change the denoiser (True when either is traced)."""
        untouched = all(is_concrete(v) and float(v) == 1.0 for v in (self.temperature, self.top_p))
        return not untouched

    def init(self) -> CallState:
        """The initial call state (NFE counter, non-finite output mask, and the cache)."""
        state: CallState = {
            "nfe": jnp.zeros((), jnp.int32),
            "bad": jnp.zeros(self.shape, jnp.bool_),
        }
        if self.cache:
            state["x"] = jnp.full(self.shape, -1, jnp.int32)
            state["out"] = jnp.zeros(self.shape + (self.process.vocab_size,), jnp.float32)
        return state

    def __call__(self, state: CallState, x: jax.Array, t: jax.Array):
        """Evaluates the network at (x `[B, L]`, t scalar or `[B]`). Returns `(output, state)`."""
        t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), x.shape[:1])
        if not self.cache:
            out = evaluate(self.model_fn, self.process, x, t)
            return out, {"nfe": state["nfe"] + 1, "bad": state["bad"] | non_finite(out)}
        changed = jnp.any(x != state["x"])
        out = jax.lax.cond(
            changed,
            lambda: evaluate(self.model_fn, self.process, x, t),
            lambda: state["out"],
        )
        return out, {
            "nfe": state["nfe"] + changed.astype(jnp.int32),
            "bad": state["bad"] | non_finite(out),
            "x": x,
            "out": out,
        }

    def with_time_derivative(self, state: CallState, x: jax.Array, t: jax.Array, order: int):
        """The network output at (x, t) and its `order`-th derivative in t (one evaluation).

        Nested forward-mode differentiation (`jax.jvp`) of `model_fn` in t: one network call
        (counted as one NFE) costing a few forward passes. The model must be differentiable in
        t. Returns `(output, d^order output / dt^order, state)`, both `[B, L, V]` float32.
        """
        if self.cache:
            raise ValueError("with_time_derivative does not support cache=True")
        t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), x.shape[:1])

        def value_and_derivative(k):
            if k == 0:
                return lambda t: (evaluate(self.model_fn, self.process, x, t),) * 2
            inner = value_and_derivative(k - 1)

            def fn(t):
                (value, _), (_, derivative) = jax.jvp(inner, (t,), (jnp.ones_like(t),))
                return value, derivative

            return fn

        out, d_out = value_and_derivative(order)(t)
        bad = state["bad"] | non_finite(out) | non_finite(d_out)
        return out, d_out, {"nfe": state["nfe"] + 1, "bad": bad}

    def temper(self, log_p0: jax.Array) -> jax.Array:
        """Applies temperature and top-p to denoiser logits `[B, L, V]`."""
        return top_p_filter(apply_temperature(log_p0, self.temperature), self.top_p)

    def denoiser(self, out: jax.Array, x: jax.Array, t: jax.Array) -> jax.Array:
        """Tempered denoiser logits `[B, L, V]` from a network output."""
        t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), x.shape[:1])
        return self.temper(as_denoiser(self.process, out, x, t, self.prediction))

    def score(self, out: jax.Array, x: jax.Array, t: jax.Array) -> jax.Array:
        """Log concrete scores `[B, L, V]` (through the tempered denoiser if tempering is on)."""
        if self.prediction == "concrete_score" and not self.tempered:
            return out
        t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), x.shape[:1])
        return denoiser_to_score(self.process, self.denoiser(out, x, t), x, t)

    def rates(self, out: jax.Array, x: jax.Array, t: jax.Array):
        """Reverse rates `(scale [B], log_rel [B, L, S])` from a network output."""
        t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), x.shape[:1])
        if self.prediction == "concrete_score" and not self.tempered:
            return self.process.reverse_rates(x, t, log_r=out)
        return self.process.reverse_rates(x, t, log_p0=self.denoiser(out, x, t))


def non_finite(out: jax.Array) -> jax.Array:
    """`[B, L]` True where a `[B, L, V]` output holds NaN or +inf (-inf is a valid value)."""
    return jnp.any(jnp.isnan(out) | (out == jnp.inf), axis=-1)


def finish_tokens(x: jax.Array, state: CallState, sampler: str) -> tuple[jax.Array, dict]:
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
