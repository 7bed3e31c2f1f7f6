"""Adaptive-step ODE integration on device: our own embedded Runge-Kutta, or diffrax.

Both integrate `dy/dt = fn(t, y)` for a pytree `y` from t0 to t1 (either direction) inside one
`lax.while_loop`, with the error measured as the RMS over every element of
`err / (atol + rtol max(|y_n|, |y_{n+1}|))` (one step size for the whole batch, as scipy and
diffrax do on a flattened state). `docs/continuous.md` records which backend is the default and
the measurement behind it.

Tableaux: Dormand & Prince 1980 ("dopri5", 5(4)), Bogacki & Shampine 1989 ("bosh3", 3(2)); step
control and starting step from Hairer, Norsett & Wanner, Solving ODEs I (section II.4).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from diffax.core import check_choice
from diffax.core.arrays import float_dtype

PyTree = Any
VectorField = Callable[[jax.Array, PyTree], PyTree]


@dataclasses.dataclass(frozen=True)
class ButcherTableau:
    """An explicit embedded RK method whose last stage is evaluated at the new point (FSAL)."""

    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    b_low: tuple[float, ...]
    low_order: int


DOPRI5 = ButcherTableau(
    c=(0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0),
    a=(
        (1 / 5,),
        (3 / 40, 9 / 40),
        (44 / 45, -56 / 15, 32 / 9),
        (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
        (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
        (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
    ),
    b=(35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0),
    b_low=(5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40),
    low_order=4,
)

BOSH3 = ButcherTableau(
    c=(0.0, 1 / 2, 3 / 4, 1.0),
    a=((1 / 2,), (0.0, 3 / 4), (2 / 9, 1 / 3, 4 / 9)),
    b=(2 / 9, 1 / 3, 4 / 9, 0.0),
    b_low=(7 / 24, 1 / 4, 1 / 3, 1 / 8),
    low_order=2,
)

TABLEAUS = {"dopri5": DOPRI5, "bosh3": BOSH3}
BACKENDS = ("own", "diffrax")


class SolveStats(NamedTuple):
    """Counters of an adaptive solve (int32 scalars; `success` is bool)."""

    nfe: jax.Array
    num_steps: jax.Array
    num_accepted: jax.Array
    success: jax.Array


def _axpy(y: PyTree, h: jax.Array, coeffs, ks) -> PyTree:
    """y + h * sum_i coeffs[i] ks[i], skipping zero coefficients."""
    terms = [(c, k) for c, k in zip(coeffs, ks, strict=False) if c != 0.0]

    def combine(y_leaf, *k_leaves):
        acc = sum(c * kl for (c, _), kl in zip(terms, k_leaves, strict=True))
        return y_leaf + h * acc

    return jax.tree_util.tree_map(combine, y, *[k for _, k in terms])


def _rms(tree: PyTree) -> jax.Array:
    leaves = jax.tree_util.tree_leaves(tree)
    total = sum(jnp.sum(jnp.square(x)) for x in leaves)
    count = sum(x.size for x in leaves)
    return jnp.sqrt(total / count)


def _scaled(tree: PyTree, y0: PyTree, y1: PyTree, rtol: float, atol: float) -> PyTree:
    return jax.tree_util.tree_map(
        lambda e, a, b: e / (atol + rtol * jnp.maximum(jnp.abs(a), jnp.abs(b))), tree, y0, y1
    )


def _initial_step(fn, t0, y0, f0, direction, span, t_lo, t_hi, rtol, atol, order):
    """Hairer-Norsett-Wanner's starting step (one extra evaluation), at most `span`.

    The trial point t0 + h0 is where the extra evaluation happens, so h0 is capped at the length
    of the interval: HNW's 0.01 |y0| / |f0| can exceed it by far (a model evaluated at t = -14
    for a PF-ODE on [1e-3, 1]). A non-finite h0 (NaN field values) also falls back to the span's
    end, so `fn` is never called at a time outside [t0, t1] or at NaN (t0 + h0 is clipped as
    well: with h0 = span it can round past t1 by an ulp).
    """
    d0 = _rms(_scaled(y0, y0, y0, rtol, atol))
    d1 = _rms(_scaled(f0, y0, y0, rtol, atol))
    h0 = jnp.where((d0 < 1e-5) | (d1 < 1e-5), 1e-6, 0.01 * d0 / d1)
    h0 = jnp.where(jnp.isfinite(h0) & (h0 > 0), jnp.minimum(h0, span), span)
    y1 = jax.tree_util.tree_map(lambda y, f: y + direction * h0 * f, y0, f0)
    f1 = fn(jnp.clip(t0 + direction * h0, t_lo, t_hi), y1)
    df = jax.tree_util.tree_map(lambda a, b: (a - b) / h0, f1, f0)
    d2 = _rms(_scaled(df, y0, y0, rtol, atol))
    h1 = jnp.where(
        jnp.maximum(d1, d2) <= 1e-15,
        jnp.maximum(1e-6, h0 * 1e-3),
        (0.01 / jnp.maximum(d1, d2)) ** (1.0 / (order + 1)),
    )
    h = jnp.minimum(100.0 * h0, h1)
    return jnp.where(jnp.isfinite(h) & (h > 0), jnp.minimum(h, span), span)


def _solve_own(fn, y0, t0, t1, tableau, rtol, atol, max_steps, safety=0.9):
    t0 = jnp.asarray(t0, float_dtype())
    t1 = jnp.asarray(t1, float_dtype())
    direction = jnp.sign(t1 - t0)
    span = jnp.abs(t1 - t0)
    t_lo, t_hi = jnp.minimum(t0, t1), jnp.maximum(t0, t1)
    f0 = fn(t0, y0)
    h = _initial_step(fn, t0, y0, f0, direction, span, t_lo, t_hi, rtol, atol, tableau.low_order)
    b_err = tuple(b - bl for b, bl in zip(tableau.b, tableau.b_low, strict=True))
    exponent = -1.0 / (tableau.low_order + 1)
    num_stages = len(tableau.c)

    def cond(state):
        t, _, _, _, _, n, _, finite = state
        return (direction * (t1 - t) > 0) & (n < max_steps) & finite

    def body(state):
        t, y, k1, h, nfe, n, n_acc, _ = state
        remaining = jnp.abs(t1 - t)
        last = h >= remaining
        step = direction * jnp.minimum(h, remaining)
        ks = [k1]
        for i in range(1, num_stages):
            y_i = _axpy(y, step, tableau.a[i - 1], ks)
            # t + c step can round past t1 by an ulp on the last step: stay inside [t0, t1].
            ks.append(fn(jnp.clip(t + tableau.c[i] * step, t_lo, t_hi), y_i))
        # FSAL: the last stage was evaluated at y + step * sum(b k), i.e. at the new point.
        y_new = _axpy(y, step, tableau.b, ks)
        err = _axpy(jax.tree_util.tree_map(jnp.zeros_like, y), step, b_err, ks)
        e = _rms(_scaled(err, y, y_new, rtol, atol))
        # A NaN error (non-finite field values) rejects the step and ends the solve at once
        # (success = False), instead of shrinking h until max_steps.
        accept = e <= 1.0
        factor = jnp.where(e == 0.0, 10.0, safety * e**exponent)
        factor = jnp.clip(factor, 0.2, jnp.where(accept, 10.0, 1.0))
        t_new = jnp.where(accept, jnp.where(last, t1, t + step), t)
        y_out = jax.tree_util.tree_map(lambda a, b: jnp.where(accept, a, b), y_new, y)
        k_out = jax.tree_util.tree_map(lambda a, b: jnp.where(accept, a, b), ks[-1], k1)
        h_new = jnp.abs(step) * factor
        finite = ~jnp.isnan(e)
        return t_new, y_out, k_out, h_new, nfe + num_stages - 1, n + 1, n_acc + accept, finite

    state = (t0, y0, f0, h, jnp.int32(2), jnp.int32(0), jnp.int32(0), jnp.bool_(True))
    t, y, _, _, nfe, n, n_acc, _ = jax.lax.while_loop(cond, body, state)
    return y, SolveStats(nfe, n, n_acc, t == t1)


def _solve_diffrax(fn, y0, t0, t1, method, rtol, atol, max_steps):
    import diffrax  # the math layer may use diffrax; imported lazily to keep import time low

    solvers = {"dopri5": diffrax.Dopri5, "bosh3": diffrax.Bosh3, "tsit5": diffrax.Tsit5}
    solver = solvers[method]()
    t_lo, t_hi = jnp.minimum(t0, t1), jnp.maximum(t0, t1)
    sol = diffrax.diffeqsolve(
        # diffrax's stage times and starting-step probe are not guaranteed to stay inside
        # [t0, t1]; the field (a model defined on [0, 1]) is only ever evaluated inside.
        diffrax.ODETerm(lambda t, y, args: fn(jnp.clip(t, t_lo, t_hi), y)),
        solver,
        t0=jnp.asarray(t0, float_dtype()),
        t1=jnp.asarray(t1, float_dtype()),
        dt0=None,
        y0=y0,
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        saveat=diffrax.SaveAt(t1=True),
        max_steps=max_steps,
        throw=False,
    )
    y1 = jax.tree_util.tree_map(lambda a: a[-1], sol.ys)
    n = jnp.asarray(sol.stats["num_steps"], jnp.int32)
    stages = {"dopri5": 6, "bosh3": 3, "tsit5": 6}[method]
    # FSAL solvers: one evaluation at t0 (diffrax's starting-step heuristic shares it), then
    # `stages` per attempted step, accepted or rejected (checked against counted calls in tests).
    nfe = 1 + stages * n
    success = sol.result == diffrax.RESULTS.successful
    return y1, SolveStats(nfe, n, jnp.asarray(sol.stats["num_accepted_steps"], jnp.int32), success)


def solve_adaptive(
    fn: VectorField,
    y0: PyTree,
    t0: float | jax.Array,
    t1: float | jax.Array,
    *,
    method: str = "dopri5",
    backend: str = "own",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    max_steps: int = 4096,
) -> tuple[PyTree, SolveStats]:
    """Integrates `dy/dt = fn(t, y)` from t0 to t1 with an adaptive embedded RK method.

    `fn` is only evaluated at times inside [min(t0, t1), max(t0, t1)] (the starting-step
    heuristic and every stage included), so a field defined only there (a model on [0, 1]) is
    safe. A step whose error estimate is NaN (non-finite field values) ends the solve with
    `stats.success = False` and `y1` the last accepted state (own backend).

    Args:
      fn: vector field `(t: scalar, y: pytree) -> pytree` like `y`.
      y0: initial state (pytree of float32 arrays).
      t0, t1: start and end times (t1 < t0 allowed).
      method: "dopri5" or "bosh3" (both backends), "tsit5" (diffrax only).
      backend: "own" (our while_loop) or "diffrax" (`diffrax.diffeqsolve` with a PID controller).
      rtol, atol: relative and absolute tolerances.
      max_steps: cap on attempted steps; `stats.success` is False if it is reached.

    Returns:
      `(y1, stats)`. References: Dormand & Prince 1980; Bogacki & Shampine 1989; Kidger 2021,
      On Neural Differential Equations (diffrax).
    """
    check_choice(backend, BACKENDS, "backend")
    if backend == "diffrax":
        check_choice(method, ("dopri5", "bosh3", "tsit5"), "method")
        return _solve_diffrax(fn, y0, t0, t1, method, rtol, atol, max_steps)
    check_choice(method, tuple(TABLEAUS), "method")
    return _solve_own(fn, y0, t0, t1, TABLEAUS[method], rtol, atol, max_steps)
