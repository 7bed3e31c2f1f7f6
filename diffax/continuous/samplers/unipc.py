"""UniPC: a unified predictor-corrector multistep solver of the PF-ODE in data (x0) prediction.

With l = logSNR / 2 = log(alpha/sigma) and a step from l_0 to l_1 = l_0 + h, the exact solution
is `x_1 = (sigma_1/sigma_0) x_0 + sigma_1 int e^l x0_hat(l) dl`. UniP-p (the predictor) keeps the
first-order part `(sigma_1/sigma_0) x_0 - alpha_1 expm1(-h) m_0` (m = x0 prediction) and adds
`-alpha_1 B(h) sum_k rho_k D_k`, with divided differences D_k = (m_k - m_0) / r_k of the p - 1
previous evaluations at r_k = (l_k - l_0)/h; the weights rho solve the order conditions
`sum_k rho_k r_k^(j-1) = j! phi_(j+1)(-h) (-h) / B(h)`, j = 1..p (phi of DPM-Solver). UniC-p (the
corrector) redoes the step that led to the current point with the evaluation made there for
the next predictor, one more node at r = 1: order p + 1 at no extra evaluation.
B(h) = -h ("bh1") or expm1(-h) ("bh2").
Zhao et al. 2023, UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of Diffusion
Models (Algorithms 1-3, B(h) variants of Section 3.2).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from diffax.continuous.samplers.registry import register_sampler
from diffax.continuous.samplers.step import Step, TMinPerStep, is_final_to_zero, num_real_steps

VARIANTS = ("bh1", "bh2")

# phi_k(z) by its Taylor series sum_n z^n / (n + k)! for |z| below this (the recursion
# phi_(k+1) = (phi_k - 1/k!) / z loses ~ k digits there), by the recursion above it.
_SERIES_BELOW = 1.0
_SERIES_TERMS = 20  # 1 / 21! < 2e-20: float64-exact on |z| < 1


def phi_functions(z: jax.Array, k_max: int) -> list[jax.Array]:
    """`[phi_1(z), ..., phi_k_max(z)]`, phi_k(z) = sum_n z^n / (n + k)!, accurate for every z <= 0.

    phi_1(z) = expm1(z)/z and phi_(k+1)(z) = (phi_k(z) - 1/k!)/z, the coefficients of
    exponential integrators (Hochbruck & Ostermann 2010); the series is used near z = 0, where
    the recursion cancels, so UniPC-3's weights stay accurate in float32 for small steps.
    """
    small = jnp.abs(z) < _SERIES_BELOW
    z_big = jnp.where(small, -1.0, z)
    z_small = jnp.where(small, z, 0.0)
    rec = [jnp.expm1(z_big) / z_big]
    for k in range(1, k_max):
        rec.append((rec[-1] - 1.0 / math.factorial(k)) / z_big)
    out = []
    for k in range(1, k_max + 1):
        # Horner form of sum_{n < terms} z^n / (n + k)!.
        series = jnp.zeros_like(z_small)
        for n in reversed(range(_SERIES_TERMS)):
            series = series * z_small + 1.0 / math.factorial(n + k)
        out.append(jnp.where(small, series, rec[k - 1]))
    return out


def unipc_weights(h: jax.Array, variant: str, k_max: int) -> tuple[jax.Array, list[jax.Array]]:
    """`(B(h), [b_1, ..., b_k_max])`: the right-hand sides of UniPC's order conditions,
    b_j = j! (-h) phi_(j+1)(-h) / B(h), for a step of half-logSNR length h > 0."""
    phis = phi_functions(-h, k_max + 1)
    if variant == "bh1":
        b_h = -h
        b = [math.factorial(j) * phis[j] for j in range(1, k_max + 1)]
    else:
        phi1 = phis[0]
        b_h = -h * phi1  # expm1(-h)
        b = [math.factorial(j) * phis[j] / phi1 for j in range(1, k_max + 1)]
    return b_h, b


def _solve_nodes(nodes: list[jax.Array], b: list[jax.Array]) -> list[jax.Array]:
    """Weights rho with `sum_m rho_m nodes_m^j = b_(j+1)`, j = 0..len(nodes) - 1 (a Vandermonde
    system of size 1-3), in Lagrange form: rho_m is the functional b applied to the Lagrange
    basis polynomial of node m."""
    if len(nodes) == 1:
        return [b[0]]
    rho = []
    for m, a in enumerate(nodes):
        others = [c for n, c in enumerate(nodes) if n != m]
        if len(others) == 1:
            (c,) = others
            rho.append((b[1] - c * b[0]) / (a - c))
        else:
            c, d = others
            rho.append((b[2] - (c + d) * b[1] + c * d * b[0]) / ((a - c) * (a - d)))
    return rho


def _select(order: jax.Array, candidates: list[jax.Array]) -> jax.Array:
    """`candidates[order - 1]` for a traced `order` in 1..len(candidates)."""
    out = candidates[0]
    for k, cand in enumerate(candidates[1:], start=2):
        out = jnp.where(order == k, cand, out)
    return out


def _history_order(order: int, i: jax.Array, gap0: jax.Array, gap1: jax.Array) -> jax.Array:
    """The order a multistep update at grid index i can use: at most i + 1 points exist, and
    a zero-length interval between them (a repeated grid time) cannot serve as a difference."""
    p = jnp.minimum(order, i + 1)
    p = jnp.where(gap0 > 0, p, 1)
    return jnp.where((gap1 > 0) | (p < 3), p, jnp.minimum(p, 2))


def _update(x, m, history, lam, log_sigma, alpha, j, p, variant, max_order, m_new=None):
    """One UniP (m_new None) or UniC (m_new: evaluation at the end point) update of order p
    from grid index j to j + 1, starting at x with evaluation m at j and
    `history = [m_(j-1), m_(j-2), ...]` (length max_order - 1)."""
    h = lam[j + 1] - lam[j]
    h_safe = jnp.where(h > 0, h, 1.0)
    ratio = jnp.exp(log_sigma[j + 1] - log_sigma[j])
    a_next = alpha[j + 1]
    first = ratio * x - a_next * jnp.expm1(-h_safe) * m
    corrector = m_new is not None
    # Nodes r_k = (l_(j-k) - l_j)/h of the previous evaluations (negative), and their
    # differences D_k = (m_(j-k) - m)/r_k; r = 1 is the new evaluation (corrector only).
    rs, ds = [], []
    for k, m_k in enumerate(history[: max_order - 1], start=1):
        r = (lam[jnp.maximum(j - k, 0)] - lam[j]) / h_safe
        r = jnp.where(p > k, r, -float(k))  # unused node: keep the formulas finite
        rs.append(r)
        ds.append((m_k - m) / r)
    b_h, b = unipc_weights(h_safe, variant, max_order)
    candidates = []  # the update of each order q = 1..max_order
    for q in range(1, max_order + 1):
        if corrector:
            # UniC-q: nodes r_1..r_(q-1) and 1; q = 1 uses rho = 1/2 as the reference code.
            nodes = rs[: q - 1] + [jnp.ones_like(h_safe)]
            rho = [0.5 * jnp.ones_like(h_safe)] if q == 1 else _solve_nodes(nodes, b[:q])
            terms = [*ds[: q - 1], m_new - m]
        elif q == 1:
            candidates.append(first)  # UniP-1 is the first-order step
            continue
        else:
            # UniP-q: nodes r_1..r_(q-1); q = 2 uses rho = 1/2 as the reference code.
            rho = [0.5 * jnp.ones_like(h_safe)] if q == 2 else _solve_nodes(rs[: q - 1], b[: q - 1])
            terms = ds[: q - 1]
        res = sum(rk * dk for rk, dk in zip(rho, terms, strict=True))
        candidates.append(first - a_next * b_h * res)
    return _select(p, candidates)


@register_sampler("unipc")
def unipc(
    order: int = 2, variant: str = "bh2", lower_order_final: bool = True, corrector: bool = True
) -> Step:
    """UniPC-p: multistep predictor UniP-p with corrector UniC-p, in x0 prediction. NFE = N.

    Deterministic. The corrector at step i corrects the point x_i reached by the previous
    predictor, using the evaluation at (uncorrected) x_i that the next predictor needs, so it
    costs no evaluation; the last step is not corrected. Global order p + 1 with the corrector
    (p without), once p previous evaluations exist (the first steps warm up at lower order).
    By default the grid ends at t = 0, where the step (first order there) returns x0_hat.

    Args:
      order: p in {1, 2, 3}, the predictor's order (diffusers' `solver_order`).
      variant: "bh1" (B(h) = h, recommended by the authors for unconditional sampling with
        few steps) or "bh2" (B(h) = e^h - 1, for guided sampling and the default of diffusers).
      lower_order_final: on the last steps use order at most the number of steps left (as
        diffusers' `UniPCMultistepScheduler`, whatever N); the step to sigma = 0 is first order
        in any case.
      corrector: apply UniC (False: UniP-p alone, order p).

    Returns:
      A `Step` (`evals_per_step=1`, default grid "logsnr", `to_zero=True`).
    """
    if isinstance(order, bool) or not isinstance(order, int) or order not in (1, 2, 3):
        raise ValueError(f"order must be 1, 2 or 3 (UniPC-p), got {order!r}")
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS} (B(h) of UniPC), got {variant!r}")

    def init(model, x, ts):
        process = model.process
        # x0 predictions at i - 1, i - 2, i - 3 (the corrector of order 3 reaches back 3).
        history = {f"m{k}": jnp.zeros_like(x) for k in (1, 2, 3)}
        return {
            "lam": 0.5 * process.log_snr(ts),
            "log_sigma": process.log_sigma(ts),
            "alpha": process.alpha(ts),
            "i": jnp.int32(0),
            "n": num_real_steps(ts),
            "x_prev": x,  # the (corrected) x at i - 1: where the corrector restarts
            "p_prev": jnp.int32(1),  # the order of the predictor at i - 1
            **history,
        }

    def step(model, key, x, state, t, s):
        del key
        lam, i = state["lam"], state["i"]
        grid = (lam, state["log_sigma"], state["alpha"])
        m1, m2, m3 = state["m1"], state["m2"], state["m3"]
        m = model.denoise(x, t)[0]
        if corrector:
            prev = jnp.maximum(i - 1, 0)
            x_c = _update(
                state["x_prev"], m1, [m2, m3], *grid, prev, state["p_prev"], variant, order, m
            )
            use = (i > 0) & (lam[i] > lam[prev])
            x = jnp.where(use, x_c, x)
        h = lam[i + 1] - lam[i]
        gap0 = lam[i] - lam[jnp.maximum(i - 1, 0)]
        gap1 = lam[jnp.maximum(i - 1, 0)] - lam[jnp.maximum(i - 2, 0)]
        p = _history_order(order, i, gap0, gap1)
        if lower_order_final:
            p = jnp.minimum(p, state["n"] - i)
        p = jnp.where(is_final_to_zero(model.process, s), 1, jnp.maximum(p, 1))
        x_new = _update(x, m, [m1, m2], *grid, i, p, variant, order)
        x_out = jnp.where(h > 0, x_new, x)
        new_state = {
            **state,
            "i": i + 1,
            "x_prev": x,
            "p_prev": p,
            "m1": m,
            "m2": m1,
            "m3": m2,
        }
        return x_out, new_state

    return Step(
        init,
        step,
        evals_per_step=1,
        name="unipc",
        grid="quadratic",
        t_min=TMinPerStep(0.3),
        reference="Zhao et al. 2023, UniPC: A Unified Predictor-Corrector Framework (UniP/UniC)",
        to_zero=True,
    )
