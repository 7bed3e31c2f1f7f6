"""Network calls inside samplers: output checks, temperature / top-p, p(x_0) caching, NFE.

Caching (`cache=True`) is for time-free denoisers of the masked process, whose exact p(x_0 | x_t)
does not depend on t: when x_t has not changed since the last call (no token revealed), the
previous output is reused. Under `jit` the call sits in `lax.cond`, so a skipped evaluation
really is skipped, and `nfe` counts only the evaluations made. The test is batch-wide: the
network runs if any sequence in the batch changed.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from diffax.discrete.categorical import apply_temperature, top_p_filter
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
        return self.temperature != 1.0 or self.top_p != 1.0

    def init(self) -> CallState:
        """The initial call state (NFE counter, and the cache when enabled)."""
        state: CallState = {"nfe": jnp.zeros((), jnp.int32)}
        if self.cache:
            state["x"] = jnp.full(self.shape, -1, jnp.int32)
            state["out"] = jnp.zeros(self.shape + (self.process.vocab_size,), jnp.float32)
        return state

    def __call__(self, state: CallState, x: jax.Array, t: jax.Array):
        """Evaluates the network at (x `[B, L]`, t scalar or `[B]`). Returns `(output, state)`."""
        t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), x.shape[:1])
        if not self.cache:
            out = evaluate(self.model_fn, self.process, x, t)
            return out, {"nfe": state["nfe"] + 1}
        changed = jnp.any(x != state["x"])
        out = jax.lax.cond(
            changed,
            lambda: evaluate(self.model_fn, self.process, x, t),
            lambda: state["out"],
        )
        return out, {"nfe": state["nfe"] + changed.astype(jnp.int32), "x": x, "out": out}

    def denoiser(self, out: jax.Array, x: jax.Array, t: jax.Array) -> jax.Array:
        """Tempered denoiser logits `[B, L, V]` from a network output."""
        t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), x.shape[:1])
        log_p0 = as_denoiser(self.process, out, x, t, self.prediction)
        return top_p_filter(apply_temperature(log_p0, self.temperature), self.top_p)

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
