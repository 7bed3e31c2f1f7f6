"""A CTMC with any base generator Q_base (small vocabularies).

Transition matrices P(s -> t) = expm(Delta Q_base), Delta = sigma_bar(t) - sigma_bar(s), come from
an eigendecomposition Q_base = U diag(lambda) U^-1 computed once in float64 NumPy; at run time
only `[S]` exponentials and two `[S, S]` products (precision HIGHEST) are evaluated, in the
expm1 form P = I + U diag(expm1(lambda Delta)) U^-1 so that small off-diagonal entries keep their
relative accuracy at small Delta. Complex eigenvalues (non-reversible Q_base) are handled with
real arithmetic on real and imaginary parts. If Q_base is not (numerically) diagonalisable, the
same quantities come from `jax.scipy.linalg.expm` at run time instead.

Delta is capped at 60 / (spectral gap): beyond it P(s -> t) equals its stationary limit to far
below float32 resolution, and the cap keeps Delta = inf (alpha(t) = 0) free of inf * 0.

Reference: Campbell et al. 2022, A Continuous Time Framework for Discrete Denoising Models.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from diffax.core import batch_time, check_tokens, pytree_dataclass, static_field
from diffax.core.arrays import per_example, safe_log
from diffax.discrete.categorical import sample_categorical
from diffax.discrete.processes.base import (
    HIGHEST,
    check_prediction_name,
    gather_column,
    gather_last,
    prior_kl_from_marginal,
    stay_if_degenerate,
)
from diffax.discrete.processes.spectrum import Spectrum, spectrum, validate_rate_matrix
from diffax.discrete.schedules import LinearSchedule, Schedule, check_schedule


@pytree_dataclass
class General:
    """A per-token CTMC with rate matrix Q(t) = beta(t) Q_base for any valid generator Q_base.

    Args:
      rate_matrix: `[S, S]` base generator (NumPy/array-like; rows sum to zero, off-diagonal
        entries >= 0). Tokens take values in [0, S); the denoiser predicts S classes.
      schedule: a noise schedule (default `LinearSchedule()`); alpha(t) = exp(-sigma_bar(t)).

    The prior is the stationary law pi of Q_base (pi Q_base = 0). For a token starting at x the
    probability of never having jumped is exp(sigma_bar(t) Q_base[x, x]); it equals alpha(t) when
    every exit rate is 1 (as for `Uniform`).
    """

    rate_matrix: Any = static_field()
    schedule: Schedule = static_field(default_factory=LinearSchedule)

    def __post_init__(self):
        check_schedule(self.schedule)
        q = validate_rate_matrix(self.rate_matrix)
        # A tuple of tuples is hashable, so the process is a static (compile-time) object.
        object.__setattr__(self, "rate_matrix", tuple(map(tuple, q.tolist())))

    @functools.cached_property
    def _q(self) -> np.ndarray:
        return np.asarray(self.rate_matrix, np.float64)

    @functools.cached_property
    def _spec(self) -> Spectrum:
        return spectrum(self._q)

    @property
    def vocab_size(self) -> int:
        """V = S, the number of states (and of denoiser classes)."""
        return len(self.rate_matrix)

    @property
    def mask_id(self) -> None:
        """None: this process has no absorbing (mask) state."""
        return None

    @property
    def num_states(self) -> int:
        """S."""
        return len(self.rate_matrix)

    @property
    def num_input_ids(self) -> int:
        """How many ids a network reading x_t must embed (= S)."""
        return len(self.rate_matrix)

    @property
    def spectral_gap(self) -> float:
        """The slowest decay rate: min |Re lambda| over the nonzero eigenvalues of Q_base.

        P(0 -> t) approaches its limit like exp(-gap * sigma_bar(t)).
        """
        return self._spec.gap

    @property
    def ergodic(self) -> bool:
        """Whether Q_base has a single zero eigenvalue (one closed class).

        Then every row of P(0 -> t) tends to the same stationary law as sigma_bar(t) -> inf; with
        several closed classes the limit depends on the starting state.
        """
        return self._spec.num_zero == 1

    @property
    def diagonalisable(self) -> bool:
        """Whether transition matrices come from the eigendecomposition (else from expm)."""
        return self._spec.diagonalisable

    @property
    def rates_converge_at_alpha0(self) -> bool:
        """True for an ergodic Q_base with spectral gap > 1/2 (see `Process`)."""
        return self.ergodic and self.spectral_gap > 0.5

    def check_prediction(self, prediction: str) -> None:
        """Refuses an unknown `prediction` (both "denoiser" and "concrete_score" work)."""
        check_prediction_name(prediction)

    def prior_kl(self, x0: jax.Array) -> jax.Array:
        """sum_l KL(q_1(. | x_0^l) || pi) from the transition matrix. `[B, L]` -> `[B]`."""
        return prior_kl_from_marginal(self, x0)

    def alpha(self, t: jax.Array) -> jax.Array:
        """exp(-sigma_bar(t)) of the schedule."""
        return self.schedule.alpha(t)

    def base_rate_matrix(self) -> np.ndarray:
        """Q_base as a float64 `[S, S]` NumPy array."""
        return self._q.copy()

    def generator(self, t: jax.Array) -> jax.Array:
        """Forward generator Q(t) = beta(t) Q_base. `t`: `[B]` -> `[B, S, S]`."""
        beta = self.schedule.rate(jnp.atleast_1d(t))
        return beta[:, None, None] * jnp.asarray(self._q, jnp.float32)

    def _delta(self, s: jax.Array, t: jax.Array) -> jax.Array:
        sig_s, sig_t = self.schedule.total_noise(s), self.schedule.total_noise(t)
        delta = jnp.minimum(sig_t - sig_s, self._spec.sigma_cap)
        return jnp.where(sig_t == sig_s, 0.0, delta)

    def _expm(self, delta: jax.Array) -> jax.Array:
        """expm(delta Q_base) for `[B]` delta -> `[B, S, S]`."""
        sp = self._spec
        if not sp.diagonalisable:
            q = jnp.asarray(self._q, jnp.float32)
            with jax.default_matmul_precision("highest"):
                return jax.vmap(jax.scipy.linalg.expm)(delta[:, None, None] * q)
        d = delta[:, None]
        x_re, x_im = sp.lam_re * d, sp.lam_im * d
        e_re = jnp.expm1(x_re) * jnp.cos(x_im) - 2.0 * jnp.sin(0.5 * x_im) ** 2
        e_im = jnp.exp(x_re) * jnp.sin(x_im)
        p = self._spectral_product(e_re, e_im)
        return jnp.eye(self.num_states, dtype=jnp.float32) + p

    def _scaled_inverse(self, delta: jax.Array) -> jax.Array:
        """exp(-c delta) expm(-delta Q_base), c = fastest decay rate (entries stay bounded)."""
        sp = self._spec
        if not sp.diagonalisable:
            q = jnp.asarray(self._q, jnp.float32) + sp.fastest * jnp.eye(self.num_states)
            with jax.default_matmul_precision("highest"):
                return jax.vmap(jax.scipy.linalg.expm)(-delta[:, None, None] * q)
        d = delta[:, None]
        mag = jnp.exp((-sp.lam_re - sp.fastest) * d)
        return self._spectral_product(mag * jnp.cos(sp.lam_im * d), -mag * jnp.sin(sp.lam_im * d))

    def _spectral_product(self, e_re: jax.Array, e_im: jax.Array) -> jax.Array:
        """Re(U diag(e) U^-1) for `[B, S]` complex e given by its parts -> `[B, S, S]`."""
        sp = self._spec
        a_re = sp.u_re * e_re[:, None, :] - sp.u_im * e_im[:, None, :]
        a_im = sp.u_re * e_im[:, None, :] + sp.u_im * e_re[:, None, :]
        mm = functools.partial(jnp.einsum, "bij,jk->bik", precision=HIGHEST)
        return mm(a_re, sp.w_re) - mm(a_im, sp.w_im)

    def transition_matrix(self, s: jax.Array, t: jax.Array) -> jax.Array:
        """P(s -> t) = expm((sigma_bar(t) - sigma_bar(s)) Q_base). `[B]` -> `[B, S, S]`.

        Entries are clipped at zero (rounding can leave values of order -1e-8).
        """
        s, t = jnp.atleast_1d(s), jnp.atleast_1d(t)
        return jnp.maximum(self._expm(self._delta(s, t)), 0.0)

    def marginal_matrix(self, t: jax.Array) -> jax.Array:
        """expm(sigma_bar(t) Q_base): clean data at sigma_bar = 0 to time t. `[B]` -> `[B, S, S]`.

        Equals `transition_matrix(0, t)` when sigma_bar(0) = 0 (every schedule but geometric).
        """
        sigma = jnp.minimum(self.schedule.total_noise(jnp.atleast_1d(t)), self._spec.sigma_cap)
        return jnp.maximum(self._expm(sigma), 0.0)

    def _marginal_inverse(self, t: jax.Array) -> jax.Array:
        sigma = jnp.minimum(self.schedule.total_noise(t), self._spec.sigma_cap)
        return self._scaled_inverse(sigma)

    def marginal_probs(self, x0: jax.Array, t: jax.Array) -> jax.Array:
        """Rows q_t(. | x_0) of `marginal_matrix`. `x0`: `[B, L]`; returns `[B, L, S]`."""
        return gather_last(self.marginal_matrix(batch_time(t, x0.shape[0])), x0)

    def transition_probs(self, x: jax.Array, s: jax.Array, t: jax.Array) -> jax.Array:
        """Rows P(s -> t)[x, :]. `x`: `[B, L]`; returns `[B, L, S]`."""
        t = batch_time(t, x.shape[0])
        s = batch_time(s, x.shape[0], "s")
        return gather_last(self.transition_matrix(s, t), x)

    def sample_marginal(self, key: jax.Array, x0: jax.Array, t: jax.Array) -> jax.Array:
        """Draws x_t ~ p_t(. | x_0) = P(0 -> t)[x_0, :].

        Args:
          key: PRNG key. x0: `[B, L]` int32 ids in [0, S). t: scalar or `[B]` in [0, 1].

        Returns:
          `[B, L]` int32 ids.
        """
        check_tokens(x0, self.vocab_size, "x0")
        t = batch_time(t, x0.shape[0])
        return sample_categorical(key, safe_log(self.marginal_probs(x0, t)))

    def prior_probs(self) -> jax.Array:
        """The stationary law pi of Q_base, `[S]` float32."""
        return jnp.asarray(self._spec.stationary)

    def sample_prior(self, key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
        """Draws `shape` int32 ids from the stationary law."""
        logits = jnp.broadcast_to(safe_log(self.prior_probs()), tuple(shape) + (self.num_states,))
        return sample_categorical(key, logits)

    def forward_rates(self, x: jax.Array, t: jax.Array) -> jax.Array:
        """Forward jump rates x -> y = beta(t) Q_base[x, y] (zero at y = x). Returns `[B, L, S]`."""
        beta = per_example(self.schedule.rate(batch_time(t, x.shape[0])), 3)
        off = self._q - np.diag(np.diag(self._q))
        return beta * jnp.asarray(off, jnp.float32)[x]

    def denoiser_to_log_ratios(self, log_p0: jax.Array, x: jax.Array, t: jax.Array) -> jax.Array:
        """log r_y = log sum_x0 p(x_0 | x_t) P(0->t)[x_0, y] / P(0->t)[x_0, x_t]; log r_x = 0.

        Returns `[B, L, S]`. Reference: Campbell et al. 2022, reverse rates from a denoiser.
        """
        t = batch_time(t, x.shape[0])
        p_0t = self.marginal_matrix(t)
        col = gather_column(p_0t, x)
        p = jax.nn.softmax(log_p0.astype(jnp.float32), axis=-1)
        w = jnp.where(col > 0, p / jnp.where(col > 0, col, 1.0), 0.0)
        r = jnp.einsum("blk,bky->bly", w, p_0t, precision=HIGHEST)
        return jnp.where(jax.nn.one_hot(x, self.num_states, dtype=jnp.bool_), 0.0, safe_log(r))

    def log_ratios_to_denoiser(self, log_r: jax.Array, x: jax.Array, t: jax.Array) -> jax.Array:
        """Denoiser from a concrete score: p(x_0) ~ P(0->t)[x_0, x_t] (r @ P(0->t)^-1)[x_0].

        Negative values (inexact scores) are clipped; an all-zero row gives the uniform law.
        Inverting P(0 -> t) amplifies float32 rounding in r by its condition number (about
        exp(sigma_bar(t) * spread of Re(lambda))), so the result degrades as P(0 -> t) nears its
        rank-one limit. Returns `[B, L, S]` log-probabilities.
        """
        t = batch_time(t, x.shape[0])
        is_x = jax.nn.one_hot(x, self.num_states, dtype=jnp.bool_)
        r = jnp.where(is_x, 1.0, jnp.exp(log_r.astype(jnp.float32)))
        w = jnp.einsum("bly,byk->blk", r, self._marginal_inverse(t), precision=HIGHEST)
        p = jnp.maximum(w, 0.0) * gather_column(self.marginal_matrix(t), x)
        p = jnp.where(jnp.sum(p, axis=-1, keepdims=True) > 0, p, 1.0)
        return safe_log(p) - jnp.log(jnp.sum(p, axis=-1, keepdims=True))

    def reverse_rates(
        self,
        x: jax.Array,
        t: jax.Array,
        *,
        log_p0: jax.Array | None = None,
        log_r: jax.Array | None = None,
    ) -> tuple[jax.Array, jax.Array]:
        """Reverse rates x -> y = beta(t) Q_base[y, x] r_y (y != x).

        Returns `(scale [B], log_rel [B, L, S])` with rate = scale * exp(log_rel), scale = beta(t).
        Reference: Campbell et al. 2022, Prop. 1.
        """
        t = batch_time(t, x.shape[0])
        if log_r is None:
            log_r = self.denoiser_to_log_ratios(log_p0, x, t)
        off_t = (self._q - np.diag(np.diag(self._q))).T
        log_q_in = jnp.asarray(
            np.where(off_t > 0, np.log(np.where(off_t > 0, off_t, 1.0)), -np.inf)
        )
        log_rel = log_r.astype(jnp.float32) + log_q_in.astype(jnp.float32)[x]
        return self.schedule.rate(t), log_rel

    def posterior_logits(
        self, x: jax.Array, s: jax.Array, t: jax.Array, log_p0: jax.Array
    ) -> jax.Array:
        """Logits of p(x_s | x_t) = sum_x0 p(x_0 | x_t) q_s(x_s | x_0) P(s->t)[x_s, x_t] /
        q_t(x_t | x_0), with q_t = `marginal_matrix(t)`. `s < t`: `[B]`. Returns `[B, L, S]`.

        Reference: Austin et al. 2021 (D3PM), the posterior q(x_s | x_t, x_0).
        """
        t = batch_time(t, x.shape[0])
        s = batch_time(s, x.shape[0], "s")
        col_0t = gather_column(self.marginal_matrix(t), x)
        p = jax.nn.softmax(log_p0.astype(jnp.float32), axis=-1)
        w = jnp.where(col_0t > 0, p / jnp.where(col_0t > 0, col_0t, 1.0), 0.0)
        v = jnp.einsum("blk,bky->bly", w, self.marginal_matrix(s), precision=HIGHEST)
        return safe_log(v * gather_column(self.transition_matrix(s, t), x))

    def tweedie_logits(
        self, x: jax.Array, s: jax.Array, t: jax.Array, log_r: jax.Array
    ) -> jax.Array:
        """Logits of the Tweedie step p(x_s = y | x_t) ~ P(s->t)[y, x_t] (r @ P(s->t)^-1)_y.

        Negative values are clipped to zero; a row that vanishes keeps x_t. Returns `[B, L, S]`.
        Reference: Lou et al. 2024 (SEDD), Tweedie tau-leaping.
        """
        t = batch_time(t, x.shape[0])
        s = batch_time(s, x.shape[0], "s")
        is_x = jax.nn.one_hot(x, self.num_states, dtype=jnp.bool_)
        r = jnp.where(is_x, 1.0, jnp.exp(log_r.astype(jnp.float32)))
        m = jnp.einsum(
            "blz,bzy->bly", r, self._scaled_inverse(self._delta(s, t)), precision=HIGHEST
        )
        p = gather_column(self.transition_matrix(s, t), x) * jnp.maximum(m, 0.0)
        return stay_if_degenerate(safe_log(p), x)
