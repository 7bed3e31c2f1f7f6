"""Validation and float64 spectral data of a CTMC generator Q_base (used by `General`).

Q_base = U diag(lambda) U^-1 is computed once in NumPy float64 and stored as float32 parts for
run time; when U is ill-conditioned the generator counts as not diagonalisable and `General`
falls back to `expm`. The spectral gap (slowest nonzero decay rate) and the stationary law come
with it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


def validate_rate_matrix(rate_matrix: Any, argument: str = "rate_matrix") -> np.ndarray:
    """Checks that `rate_matrix` is a generator; returns it as float64 with exact zero row sums.

    A generator is a square `[S, S]` (S >= 2) finite matrix with off-diagonal entries >= 0 and
    rows summing to zero (tolerance 1e-6 of the largest rate), with at least one nonzero rate.
    """
    q = np.asarray(rate_matrix, dtype=np.float64)
    if q.ndim != 2 or q.shape[0] != q.shape[1] or q.shape[0] < 2:
        raise ValueError(f"{argument} must be a square [S, S] matrix with S >= 2, got {q.shape}")
    if not np.all(np.isfinite(q)):
        raise ValueError(f"{argument} must be finite")
    off = q - np.diag(np.diag(q))
    scale = max(np.abs(q).max(), 1e-300)
    if off.min() < 0:
        i, j = np.unravel_index(np.argmin(off), off.shape)
        raise ValueError(
            f"{argument} is not a valid rate matrix: off-diagonal entries must be >= 0, "
            f"got {argument}[{i}, {j}] = {off[i, j]}"
        )
    sums = q.sum(axis=1)
    if np.abs(sums).max() > 1e-6 * scale:
        i = int(np.argmax(np.abs(sums)))
        raise ValueError(
            f"{argument} is not a valid rate matrix: rows must sum to 0, got row {i} summing "
            f"to {sums[i]}"
        )
    if off.max() <= 0:
        raise ValueError(f"{argument} has no nonzero rate; the process would never move")
    return off - np.diag(off.sum(axis=1))


@dataclasses.dataclass(frozen=True)
class Spectrum:
    """Float64 spectral data of Q_base, stored as float32 arrays for run time."""

    lam_re: np.ndarray
    lam_im: np.ndarray
    u_re: np.ndarray
    u_im: np.ndarray
    w_re: np.ndarray
    w_im: np.ndarray
    diagonalisable: bool
    sigma_cap: float
    fastest: float
    stationary: np.ndarray
    gap: float
    num_zero: int


def spectrum(q: np.ndarray) -> Spectrum:
    """The spectral data of a validated generator `q` (`[S, S]` float64)."""
    scale = np.abs(q).max()
    lam, u = np.linalg.eig(q)
    lam = np.where(np.abs(lam) < 1e-12 * scale, 0.0, lam)
    try:
        w = np.linalg.inv(u)
        err = np.abs((u * lam) @ w - q).max() / scale
        ok = np.linalg.cond(u) < 1e8 and err < 1e-9
    except np.linalg.LinAlgError:
        w, ok = np.zeros_like(u), False
    nonzero = np.abs(lam) > 0
    gap = np.abs(lam.real[nonzero]).min()
    # Stationary law: pi Q = 0, sum(pi) = 1 (least squares; any one if Q is reducible).
    a = np.vstack([q.T, np.ones(len(q))])
    b = np.zeros(len(q) + 1)
    b[-1] = 1.0
    pi = np.clip(np.linalg.lstsq(a, b, rcond=None)[0], 0.0, None)
    f32 = lambda z: np.asarray(z, np.float32)
    return Spectrum(
        f32(lam.real),
        f32(lam.imag),
        f32(u.real),
        f32(u.imag),
        f32(w.real),
        f32(w.imag),
        bool(ok),
        float(60.0 / gap),
        float(-lam.real.min()),
        f32(pi / pi.sum()),
        float(gap),
        int(np.sum(~nonzero)),
    )
