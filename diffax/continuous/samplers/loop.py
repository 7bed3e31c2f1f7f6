"""`run_steps`: the one loop that runs any `Step` over an explicit decreasing time grid."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from diffax.continuous.parameterizations import ModelFn
from diffax.continuous.processes import GaussianProcess
from diffax.continuous.samplers.step import Model, Step
from diffax.core import is_concrete
from diffax.core.arrays import float_dtype
from diffax.core.validation import check_time_grid


def check_sde_t_max(process: GaussianProcess, ts: Any, sampler: str) -> None:
    """Raises `ValueError` if a concrete grid starts after `process.sde_t_max`.

    Where alpha(1) = 0 (RectifiedFlow, Cosine) the reverse SDE's diffusion g(t) and the EDM
    variable x/alpha are infinite at t = 1; samplers that need them would return NaN (or, with
    a floored alpha, overflow) instead of samples.
    """
    if not is_concrete(ts):
        return
    # Compared in float32, the precision grids are built in (float32(0.99) > 0.99).
    t_top = np.float32(process.sde_t_max)
    t_max = np.asarray(ts, np.float32)[0]
    # str() of a float32 scalar is its shortest repr (0.99), not 0.9900000095367432.
    t_top_s, t_max_s = str(t_top), str(t_max)
    if t_max > t_top:
        raise ValueError(
            f"sampler {sampler!r} simulates the reverse SDE or works in x/alpha, which is singular "
            f"for {type(process).__name__} above process.sde_t_max = {t_top_s} (alpha(1) = 0); "
            f"got t_max={t_max_s} (ts[0]). Allowed: t_max in (0, {t_top_s}] (the default), or "
            "an ODE sampler (ode_heun, dpm_solver_pp_2m, ...) from t = 1"
        )


def run_steps(
    key: jax.Array | None,
    step: Step,
    process: GaussianProcess,
    model_fn: ModelFn,
    x: jax.Array,
    ts: Any,
    *,
    prediction: str = "eps",
    denoise: bool | None = None,
    trajectory: bool = False,
    num_steps: int | jax.Array | None = None,
) -> tuple[jax.Array, dict[str, Any]]:
    """Runs `step` from `ts[0]` down the grid in one `lax.scan` (or `while_loop`), then
    optionally denoises.

    Step i goes from `ts[i]` to `ts[i + 1]` with the key `fold_in(key, i)`. The grid is checked
    first: 1-D with at least 2 times (trace time) and, when concrete, in [0, 1] and decreasing
    (repeated times are allowed: such a step must be the identity); if `step.uses_sde_t_max`,
    `ts[0] <= process.sde_t_max`. The grid is an ordinary (traceable) input: under `jit`, a new
    grid of the same length reuses the compiled sampler.

    Args:
      key: PRNG key (None for a deterministic step).
      step: the sampler, a `Step` (e.g. `diffax.continuous.samplers.ddim(eta=1.0)`).
      process: the Gaussian process the model was trained on.
      model_fn: `(x: [B, ...], t: [B]) -> [B, ...]`, predicting `prediction`.
      x: `[B, ...]` sample at `ts[0]` (e.g. `process.prior_sample`).
      ts: `[N + 1]` decreasing times (Python sequence, NumPy or JAX array), float32 or float64
        (the default float dtype: float64 when `jax_enable_x64` is on).
      prediction: one of "eps", "x0", "v", "score", "velocity".
      denoise: replace the result at the grid's last time by the x0 prediction (one more NFE):
        the noise removal of Song et al. 2021 and DPM-Solver's `denoise_to_zero`. Default
        (None): True unless `step.to_zero` (those samplers step to t = 0 themselves).
      trajectory: also return `info["trajectory"]`, `[len(ts), B, ...]`: x at every grid time
        (x at the last time before the final denoising; with `num_steps`, entries past step
        `num_steps` repeat the final x).
      num_steps: run only the first `num_steps` steps (an int or a traced int32 scalar, at most
        `len(ts) - 1`) in a `lax.while_loop`: with a grid padded to a fixed length (`time_grid(
        ..., max_steps=M)`), one compiled sampler serves every N <= M, with results identical
        to the unpadded grid. The final denoising, if any, is at `ts[num_steps]`.

    Returns:
      `(samples [B, ...], info)` with `info["nfe"]` (int32) the network evaluations made, plus
      the entries of `step.info(final_state)` if the step defines them.
    """
    if not isinstance(step, Step):
        raise TypeError(
            f"step must be a diffax.continuous.Step (e.g. diffax.continuous.samplers.ddim()), "
            f"got {type(step).__name__}"
        )
    check_time_grid(ts, "ts")
    if step.uses_sde_t_max:
        check_sde_t_max(process, ts, step.name)
    ts = jnp.asarray(ts, float_dtype())
    size = ts.shape[0] - 1
    if num_steps is not None and is_concrete(num_steps):
        if isinstance(num_steps, bool) or not 1 <= int(num_steps) <= size:
            raise ValueError(
                f"num_steps must be an integer in [1, len(ts) - 1 = {size}], got {num_steps}"
            )
    if denoise is None:
        denoise = not step.to_zero
    model = Model(process, model_fn, prediction)
    state = step.init(model, x, ts)
    nfe = model.take_nfe()

    def advance(x, state, nfe, i):
        step_key = None if key is None else jax.random.fold_in(key, i)
        x, state = step.step(model, step_key, x, state, ts[i], ts[i + 1])
        return x, state, nfe + model.take_nfe()

    x_start = x
    info: dict[str, Any] = {}
    if num_steps is None:

        def body(carry, i):
            x, state, nfe = advance(*carry, i)
            return (x, state, nfe), (x if trajectory else None)

        (x, state, nfe), xs = jax.lax.scan(body, (x, state, nfe), jnp.arange(size))
        t_last = ts[-1]
        if trajectory:
            info["trajectory"] = jnp.concatenate([x_start[None], xs])
    else:
        n = jnp.asarray(num_steps, jnp.int32)
        buffer = jnp.broadcast_to(x[None], (size + 1, *x.shape)) if trajectory else None

        def cond(carry):
            return carry[0] < n

        def body_while(carry):
            i, x, state, nfe, buffer = carry
            x, state, nfe = advance(x, state, nfe, i)
            if trajectory:
                buffer = buffer.at[i + 1].set(x)
            return i + 1, x, state, nfe, buffer

        _, x, state, nfe, buffer = jax.lax.while_loop(
            cond, body_while, (jnp.int32(0), x, state, nfe, buffer)
        )
        t_last = ts[n]
        if trajectory:
            after = (jnp.arange(size + 1) > n).reshape((-1,) + (1,) * x.ndim)
            info["trajectory"] = jnp.where(after, x[None], buffer)
    if denoise:
        x = model.denoise(x, t_last)[0]
        nfe = nfe + model.take_nfe()
    info["nfe"] = jnp.asarray(nfe, jnp.int32)
    if step.info is not None:
        info.update(step.info(state))
    return x, info
