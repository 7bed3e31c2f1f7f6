"""The sampler interface: a `Step` object run by `run_steps`, and the `Model` it calls.

A sampler is a `Step` (a NamedTuple, optax style): `init(model, x, ts) -> state` and
`step(model, key, x, state, t, s) -> (x_s, state)`, one reverse step from time t to s < t.
`model` is a `Model`: the network wrapped once for the run (prediction conversion, temperature /
top-p, p(x_0) caching, NFE counting, non-finite output tracking). Its bookkeeping lives in the
sampler state, which is a dict: `model.init()` makes the model's entries ("nfe", "bad" and, with
`cache=True`, "x" and "out"), every model call returns the state with those entries updated and
the others untouched, and a step keeps its own entries next to them (e.g.
`{**model.init(), "t": t}`). So a step threads `state` through its model calls and returns it:

    def step(model, key, x, state, t, s):
        logits, state = model.denoiser_logits(state, x, t)   # log p(x_0 | x_t), [B, L, V]
        return dd.sample_categorical(key, model.process.posterior_logits(x, s, t, logits)), state

Caching (`cache=True`) is for time-free denoisers of an absorbing process, whose exact
p(x_0 | x_t) does not depend on t: when x_t has not changed since the last call (no token
revealed), the previous output is reused. Under `jit` the call sits in `lax.cond`, so a skipped
evaluation really is skipped, and "nfe" counts only the evaluations made. The test is batch-wide:
the network runs if any sequence in the batch changed.

Non-finite outputs: every call marks the token positions whose output holds NaN or +inf (the
state's "bad", `[B, L]` bool, updated on device: no host round trip inside loops); `run_steps`
returns those positions as `INVALID_TOKEN` (-1), and raises in an eager call. -inf is a valid
output (an excluded class, a zero ratio).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from diffax.core import is_concrete
from diffax.discrete.categorical import apply_temperature, row_top, top_p_filter
from diffax.discrete.parameterizations import (
    ModelFn,
    as_denoiser,
    check_prediction,
    denoiser_to_score,
    evaluate,
)
from diffax.discrete.processes import Process
from diffax.discrete.samplers.score_limit import score_limit, uniform_limit_denoiser

State = dict[str, Any]


class Step(NamedTuple):
    """A discrete sampler: one reverse step, run over a time grid by `run_steps`.

    Attributes:
      init: `init(model, x [B, L], ts [N + 1]) -> state`, a dict that holds `model.init()`
        plus any entries the step keeps (arrays only). Checks that need the process or the
        shapes (e.g. "absorbing process only") belong here: they run at trace time.
      step: `step(model, key, x [B, L], state, t, s) -> (x_s [B, L] int32, state)`: one reverse
        step from t to s < t (scalars), calling the network only through `model`.
      evals_per_step: nominal network evaluations per grid interval (the actual count, which
        caching or skipped calls can lower, is `info["nfe"]`).
      name: the sampler's name in messages.
      grid: the name of the grid `sample` builds when no `ts` is given (see
        `diffax.discrete.GRIDS`: "uniform", `time_grid(num_steps)`; "per_token", one interval
        per token).
      final: `final(model, key, x, state, t) -> (x_0, state)`, the last interval (to t = 0,
        where the reverse rates diverge); None means `denoise`: x_0 drawn from the denoiser,
        unmasked tokens of an absorbing process kept.
      reference: one-line paper reference.
    """

    init: Callable[..., State]
    step: Callable[..., tuple[jax.Array, State]]
    evals_per_step: float = 1.0
    name: str = "custom"
    grid: str = "uniform"
    final: Callable[..., tuple[jax.Array, State]] | None = None
    reference: str = ""


def init_model(model: Model, x: jax.Array, ts: jax.Array) -> State:
    """`Step.init` of a step that keeps no state of its own: the model's state."""
    del x, ts
    return model.init()


def non_finite(out: jax.Array) -> jax.Array:
    """`[B, L]` True where a `[B, L, V]` output holds NaN or +inf (-inf is a valid value).

    Read from `row_top` (the row maximum, NaN if the row holds one): the inverse-CDF draw
    reduces the same output the same way, and XLA computes the two once.
    """
    top = row_top(out)
    return jnp.isnan(top) | (top == jnp.inf)


class Model:
    """The network as a sampler step sees it; built once per run by `run_steps`.

    Args:
      process: the forward process. model_fn: `(tokens [B, L] int32, t [B]) -> [B, L, V]`.
      prediction: what `model_fn` outputs, "denoiser" or "concrete_score".
      shape: `(B, L)`.
      temperature: > 0, divides the denoiser logits. top_p: in (0, 1], nucleus filtering.
      cache: reuse the previous output when x_t has not changed (time-free denoisers of an
        absorbing process).

    Methods that evaluate the network take and return the sampler state (see the module
    docstring); `denoiser`, `score` and `rates` convert an output already computed.
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
        process.check_prediction(prediction)
        apply_temperature(jnp.zeros(()), temperature)
        top_p_filter(jnp.zeros((1,)), top_p)
        if cache and not (process.mask_id is not None and prediction == "denoiser"):
            raise ValueError(
                "cache=True needs an absorbing process (Masked) and prediction='denoiser' (a "
                f"time-free denoiser); got {type(process).__name__} with "
                f"prediction={prediction!r}"
            )
        self.process, self.model_fn, self.prediction = process, model_fn, prediction
        self.shape, self.temperature, self.top_p, self.cache = shape, temperature, top_p, cache
        #: `(k, alpha^(k)(1))` when the score needs its alpha = 0 limit at t = 1, else None.
        self.score_limit = score_limit(process, prediction)

    @property
    def tempered(self) -> bool:
        """Whether temperature / top-p change the denoiser (True when either is traced)."""
        untouched = all(is_concrete(v) and float(v) == 1.0 for v in (self.temperature, self.top_p))
        return not untouched

    def init(self) -> State:
        """The model's state entries: NFE counter, non-finite output mask, and the cache."""
        state: State = {
            "nfe": jnp.zeros((), jnp.int32),
            "bad": jnp.zeros(self.shape, jnp.bool_),
        }
        if self.cache:
            state["x"] = jnp.full(self.shape, -1, jnp.int32)
            state["out"] = jnp.zeros(self.shape + (self.process.vocab_size,), jnp.float32)
        return state

    def _time(self, x: jax.Array, t: jax.Array) -> jax.Array:
        return jnp.broadcast_to(jnp.asarray(t, jnp.float32), x.shape[:1])

    def __call__(self, state: State, x: jax.Array, t: jax.Array) -> tuple[jax.Array, State]:
        """Network output `[B, L, V]` at (x `[B, L]`, t scalar or `[B]`). Returns `(out, state)`."""
        t = self._time(x, t)
        if not self.cache:
            out = evaluate(self.model_fn, self.process, x, t)
            return out, {**state, "nfe": state["nfe"] + 1, "bad": state["bad"] | non_finite(out)}
        changed = jnp.any(x != state["x"])
        out = jax.lax.cond(
            changed,
            lambda: evaluate(self.model_fn, self.process, x, t),
            lambda: state["out"],
        )
        nfe = state["nfe"] + changed.astype(jnp.int32)
        return out, {**state, "nfe": nfe, "bad": state["bad"] | non_finite(out), "x": x, "out": out}

    def with_time_derivative(self, state: State, x: jax.Array, t: jax.Array, order: int):
        """The network output at (x, t) and its `order`-th derivative in t (one evaluation).

        Nested forward-mode differentiation (`jax.jvp`) of `model_fn` in t: one network call
        (counted as one NFE) costing a few forward passes. The model must be differentiable in
        t. Returns `(output, d^order output / dt^order, state)`, both `[B, L, V]` float32.
        """
        if self.cache:
            raise ValueError("with_time_derivative does not support cache=True")
        t = self._time(x, t)

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
        return out, d_out, {**state, "nfe": state["nfe"] + 1, "bad": bad}

    def temper(self, log_p0: jax.Array) -> jax.Array:
        """Applies temperature and top-p to denoiser logits `[B, L, V]`."""
        return top_p_filter(apply_temperature(log_p0, self.temperature), self.top_p)

    def denoiser(
        self, out: jax.Array, x: jax.Array, t: jax.Array, *, normalize: bool = True
    ) -> jax.Array:
        """Tempered denoiser logits `[B, L, V]` from a network output at (x, t).

        `normalize=False` skips the `log_softmax` of a denoiser output: the logits are then
        log p(x_0 | x_t) up to a constant per position, which is all a draw needs (temperature
        and top-p are invariant to that constant too).
        """
        t = self._time(x, t)
        if self.prediction == "denoiser" and not normalize:
            return self.temper(out)
        return self.temper(as_denoiser(self.process, out, x, t, self.prediction))

    def score(self, out: jax.Array, x: jax.Array, t: jax.Array) -> jax.Array:
        """Log concrete scores `[B, L, V]` (through the tempered denoiser if tempering is on)."""
        if self.prediction == "concrete_score" and not self.tempered:
            return out
        t = self._time(x, t)
        return denoiser_to_score(self.process, self.denoiser(out, x, t), x, t)

    def rates(self, out: jax.Array, x: jax.Array, t: jax.Array):
        """Reverse rates `(scale [B], log_rel [B, L, S])` from a network output at (x, t)."""
        t = self._time(x, t)
        if self.prediction == "concrete_score" and not self.tempered:
            return self.process.reverse_rates(x, t, log_r=out)
        return self.process.reverse_rates(x, t, log_p0=self.denoiser(out, x, t))

    def denoiser_logits(
        self, state: State, x: jax.Array, t: jax.Array, *, normalize: bool = True
    ) -> tuple[jax.Array, State]:
        """Evaluates the network and returns `(tempered log p(x_0 | x_t) [B, L, V], state)`.

        `normalize=False`: the logits may be off by a constant per position (see `denoiser`),
        for a step that only draws from them. Where alpha(t) = 0 and the network is a concrete
        score of a uniformly mixing process, the score carries no information and the denoiser
        is read from its time derivative (one evaluation in forward mode; see
        `diffax.discrete.samplers.score_limit`).
        """
        if self.score_limit is None:
            out, state = self(state, x, t)
            return self.denoiser(out, x, t, normalize=normalize), state
        order, alpha_k = self.score_limit
        t = self._time(x, t)
        at_zero = (self.process.alpha(t) == 0.0)[:, None, None]

        def limit(state):
            out, d_out, state = self.with_time_derivative(state, x, t, order)
            log_p0 = self.temper(uniform_limit_denoiser(self.process, x, d_out, alpha_k))
            return jnp.where(at_zero, log_p0, self.denoiser(out, x, t)), state

        def plain(state):
            out, state = self(state, x, t)
            return self.denoiser(out, x, t, normalize=normalize), state

        return jax.lax.cond(jnp.any(at_zero), limit, plain, state)
