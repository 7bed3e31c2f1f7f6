"""The sampler interface: a `Step` object run by one loop, and `Model`, the network wrapped once.

A sampler is a `Step` (optax-style NamedTuple of functions plus its documented defaults):

    state = step.init(model, x, ts)                       # x: [B, ...] at ts[0], ts: [N + 1]
    x_s, state = step.step(model, key, x, state, t, s)    # one reverse step t -> s < t

`run_steps` (samplers/loop.py) scans `step.step` over the grid; `model` is a `Model`, which turns
the network output into (x0_hat, eps_hat), velocity or score and counts the evaluations made, so
`info["nfe"]` is what was actually spent. A user-written step is a few lines (see
docs/continuous.md, "Writing a sampler").
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from diffax.continuous.parameterizations import ModelFn, make_denoiser, pf_ode_velocity
from diffax.continuous.processes import GaussianProcess
from diffax.core.arrays import TINY, expand_as


class Model:
    """`model_fn` wrapped once for a sampler: parameterization conversion and NFE counting.

    Every call of `denoise`, `velocity` or `score` is one network evaluation and is counted when
    the step is traced, so straight-line steps need no bookkeeping. Evaluations inside
    `lax.cond` / `lax.while_loop` / `lax.fori_loop` bodies cannot be counted that way: call the
    network there through `model.uncounted` and add what was spent with `model.count(n)` (an
    int32, possibly traced).

    Args:
      process: the Gaussian process the model was trained on.
      model_fn: `(x: [B, ...], t: [B]) -> [B, ...]`, predicting `prediction`.
      prediction: one of "eps", "x0", "v", "score", "velocity".
    """

    def __init__(self, process: GaussianProcess, model_fn: ModelFn, prediction: str = "eps"):
        self.process = process
        self.model_fn = model_fn
        self.prediction = prediction
        self._denoiser = make_denoiser(process, model_fn, prediction)
        self._counted = True
        self._calls = 0  # evaluations seen while tracing (a Python int)
        self._spent: list[Any] = []  # counts added with `count` (traced or not)

    def denoise(self, x: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        """`(x0_hat, eps_hat)`, each `[B, ...]`, at `x: [B, ...]`, `t` scalar or `[B]`."""
        if self._counted:
            self._calls += 1
        return self._denoiser(x, _batch_time(t, x))

    def velocity(self, x: jax.Array, t: jax.Array) -> jax.Array:
        """Probability-flow ODE velocity dx/dt, `[B, ...]` (one evaluation)."""
        tb = _batch_time(t, x)
        return pf_ode_velocity(self.process, *self.denoise(x, tb), tb)

    def score(self, x: jax.Array, t: jax.Array) -> jax.Array:
        """Score grad_x log p_t(x) = -eps_hat / sigma(t), `[B, ...]` (one evaluation)."""
        tb = _batch_time(t, x)
        eps = self.denoise(x, tb)[1]
        return -eps / expand_as(jnp.maximum(self.process.sigma(tb), TINY), eps)

    @property
    def uncounted(self) -> Model:
        """The same model, but its calls are not counted (for use inside lax control flow)."""
        view = copy.copy(self)  # shares `_spent`, so `view.count` still counts
        view._counted = False
        return view

    def count(self, n: jax.Array | int) -> None:
        """Adds `n` evaluations (made through `uncounted`) to the count."""
        self._spent.append(n)

    def take_nfe(self) -> jax.Array:
        """The evaluations counted since the last call, as int32; resets the count."""
        total = jnp.asarray(self._calls, jnp.int32)
        for n in self._spent:
            total = total + jnp.asarray(n, jnp.int32)
        self._calls = 0
        self._spent.clear()
        return total


def _batch_time(t: jax.Array, x: jax.Array) -> jax.Array:
    t = jnp.asarray(t)
    return jnp.full((x.shape[0],), t) if t.ndim == 0 else t


def no_state(model: Model, x: jax.Array, ts: jax.Array) -> tuple:
    """An `init` for steps that keep no state."""
    del model, x, ts
    return ()


class Step(NamedTuple):
    """A sampler: one reverse step, its state and its defaults (run by `run_steps`).

    Attributes:
      init: `init(model, x, ts) -> state` (any pytree), with `x: [B, ...]` at `ts[0]` and the
        whole grid `ts: [N + 1]`; may precompute per-grid quantities (kept in the state).
      step: `step(model, key, x, state, t, s) -> (x_s, state)`, one step from time t to s < t
        (scalars); `key` is this step's PRNG key (`fold_in(key, i)`; None if the caller passed
        None), `model` a `Model`.
      evals_per_step: nominal network evaluations per grid interval, used to turn an NFE budget
        into `num_steps` (NaN for the adaptive steps); `info["nfe"]` reports what was spent.
      name: name used in error messages.
      grid: default named time grid of `sample` (see `diffax.continuous.time_grids.GRIDS`).
      t_min: default final time of `sample`'s grid (the last nonzero time for `to_zero`
        steps), a number or a `TMinPerStep` (`c / N`); documented in docs/continuous.md.
      uses_sde_t_max: the step simulates the reverse SDE or works in x/alpha, both singular
        where alpha(1) = 0 (RectifiedFlow, Cosine): its grid starts at `process.sde_t_max`
        by default, and `run_steps` refuses a grid starting later.
      reference: one-line paper reference.
      info: optional `info(state) -> dict`, extra entries of `info` read from the final state
        (e.g. the adaptive solvers' `num_steps` and `success`).
      to_zero: the update is exact and finite for a step to t = 0 (sigma = 0): data-prediction
        exponential integrators (DDIM, DPM-Solver++, UniPC, DEIS) and EDM's Euler last step.
        `sample`'s default grid then ends at t = 0 (`time_grid(..., to_zero=True)`) and no
        separate denoising evaluation is made (`denoise` defaults to False), so N intervals cost
        N evaluations (DPM-Solver++, diffusers' `final_sigmas_type="zero"`).

    Steps run on a grid `ts` that may be padded (a `max_steps` bucket) with repeated final times;
    `run_steps` then runs only the real steps, but `init` sees the whole padded grid: count the
    real steps as `num_real_steps(ts)`, and make a step with t == s the identity.
    """

    init: Callable[[Model, jax.Array, jax.Array], Any]
    step: Callable[..., tuple[jax.Array, Any]]
    evals_per_step: float = 1.0
    name: str = "custom"
    grid: str = "uniform"
    t_min: float | Callable[[Any], Any] = 1e-3
    uses_sde_t_max: bool = False
    reference: str = ""
    info: Callable[[Any], dict] | None = None
    to_zero: bool = False


class TMinPerStep(NamedTuple):
    """A default last nonzero time that shrinks with the number of steps: `t_min = c / N`.

    With a grid ending at t = 0, the best last nonzero time is where the final x0 step's error
    balances the solver's: measured on the benchmark mixtures it falls like 1/N (see
    docs/continuous.md, "Default grids"). `N` may be a traced int (a `max_steps` bucket).
    """

    c: float

    def __call__(self, num_steps) -> jax.Array | float:
        """`c / num_steps` (a float for a Python int, else a traced scalar)."""
        if isinstance(num_steps, int):
            return min(self.c / num_steps, 0.5)
        return jnp.minimum(self.c / jnp.asarray(num_steps).astype(float), 0.5)

    def __repr__(self) -> str:
        return f"{self.c:g}/N"


def resolve_t_min(step: Step, num_steps) -> float | jax.Array:
    """The step's default `t_min` for `num_steps` intervals (a number, or `TMinPerStep`)."""
    return step.t_min(num_steps) if callable(step.t_min) else step.t_min


def num_real_steps(ts: jax.Array) -> jax.Array:
    """The number of intervals of `ts` that move (t > s), as int32: N for a grid padded with
    repeated final times (a `max_steps` bucket) or with repeated times inside."""
    return jnp.sum(ts[1:] < ts[:-1]).astype(jnp.int32)


def is_final_to_zero(process: GaussianProcess, s: jax.Array) -> jax.Array:
    """Whether a step to time `s` ends at sigma(s) = 0, where only the x0 prediction is left
    (the step must be first order there: higher-order terms divide by an infinite h)."""
    return process.sigma(s) == 0
