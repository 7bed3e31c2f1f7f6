"""The uniform CTMC: each token is resampled uniformly from the V ids at rate beta(t).

Q_base = 11^T / V - I, so P(s -> t) = a I + (1 - a) 11^T / V with a = alpha(t) / alpha(s) (row-
stochastic): a token keeps its clean value "untouched" with probability alpha(t) and is a uniform
draw otherwise. The prior is uniform (reached exactly when alpha(1) = 0). Every operation here
is O(V) per token, so it scales to large vocabularies.

Reference: Austin et al. 2021 (D3PM, uniform); Lou et al. 2024 (SEDD, uniform graph).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from diffax.core import batch_time, check_positive_int, check_tokens, pytree_dataclass, static_field
from diffax.core.arrays import log1mexp, per_example, safe_log
from diffax.discrete.processes.base import check_prediction_name, stay_if_degenerate
from diffax.discrete.schedules import LinearSchedule, Schedule, check_schedule


@pytree_dataclass
class Uniform:
    """Uniform diffusion over `vocab_size` token ids.

    Args:
      vocab_size: V (>= 2), the number of token ids (= states; no mask).
      schedule: a noise schedule (default `LinearSchedule()`).
    """

    vocab_size: int = static_field()
    schedule: Schedule = static_field(default_factory=LinearSchedule)

    def __post_init__(self):
        check_schedule(self.schedule)
        check_positive_int(self.vocab_size, "vocab_size", minimum=2)

    @property
    def mask_id(self) -> None:
        """None: this process has no absorbing (mask) state."""
        return None

    @property
    def num_states(self) -> int:
        """S = V."""
        return self.vocab_size

    @property
    def num_input_ids(self) -> int:
        """How many ids a network reading x_t must embed (= V)."""
        return self.vocab_size

    @property
    def rates_converge_at_alpha0(self) -> bool:
        """True: P(0 -> t) reaches the uniform law at gap 1, so the rate KL tends to 0."""
        return True

    def check_prediction(self, prediction: str) -> None:
        """Refuses an unknown `prediction` (both "denoiser" and "concrete_score" work)."""
        check_prediction_name(prediction)

    def prior_kl(self, x0: jax.Array) -> jax.Array:
        """KL(alpha_1 e_x0 + (1 - alpha_1) / V || uniform) per token, in closed form.

        `x0`: `[B, L]` -> `[B]` float32 (zero when alpha(1) = 0).
        """
        v, a1 = self.vocab_size, self.schedule.alpha_at(1.0)
        per_token = (a1 + (1.0 - a1) / v) * math.log1p((v - 1) * a1)
        if a1 < 1.0:
            per_token += (v - 1) * (1.0 - a1) / v * math.log1p(-a1)
        return jnp.full((x0.shape[0],), math.prod(x0.shape[1:]) * per_token, jnp.float32)

    def alpha(self, t: jax.Array) -> jax.Array:
        """Probability that a token was never resampled (still untouched) at time t."""
        return self.schedule.alpha(t)

    def base_rate_matrix(self) -> np.ndarray:
        """Q_base = 11^T / V - I as a float64 `[V, V]` NumPy array."""
        v = self.vocab_size
        return np.full((v, v), 1.0 / v) - np.eye(v)

    def generator(self, t: jax.Array) -> jax.Array:
        """Forward generator Q(t) = beta(t) Q_base. `t`: `[B]` -> `[B, V, V]`."""
        beta = self.schedule.rate(jnp.atleast_1d(t))
        return beta[:, None, None] * jnp.asarray(self.base_rate_matrix(), jnp.float32)

    def _keep(self, s: jax.Array, t: jax.Array) -> jax.Array:
        return self.alpha(t) / self.alpha(s)

    def transition_matrix(self, s: jax.Array, t: jax.Array) -> jax.Array:
        """P(s -> t) = a I + (1 - a) 11^T / V. `s`, `t`: `[B]` -> `[B, V, V]`."""
        a = self._keep(jnp.atleast_1d(s), jnp.atleast_1d(t))[:, None, None]
        v = self.vocab_size
        return a * jnp.eye(v, dtype=jnp.float32) + (1.0 - a) / v

    def marginal_matrix(self, t: jax.Array) -> jax.Array:
        """q_t(x_t | x_0) = alpha I + (1 - alpha) 11^T / V from clean data. `[B]` -> `[B, V, V]`."""
        t = jnp.atleast_1d(t)
        a, one_minus = self.alpha(t)[:, None, None], self.schedule.one_minus_alpha(t)
        eye = jnp.eye(self.vocab_size, dtype=jnp.float32)
        return a * eye + one_minus[:, None, None] / self.vocab_size

    def marginal_probs(self, x0: jax.Array, t: jax.Array) -> jax.Array:
        """Rows q_t(. | x_0). `x0`: `[B, L]`; returns `[B, L, V]`."""
        t = batch_time(t, x0.shape[0])
        a, one_minus = (
            per_example(self.alpha(t), 3),
            per_example(self.schedule.one_minus_alpha(t), 3),
        )
        return a * jax.nn.one_hot(x0, self.vocab_size) + one_minus / self.vocab_size

    def transition_probs(self, x: jax.Array, s: jax.Array, t: jax.Array) -> jax.Array:
        """Rows P(s -> t)[x, :]. `x`: `[B, L]`; returns `[B, L, V]`."""
        t = batch_time(t, x.shape[0])
        a = per_example(self._keep(batch_time(s, x.shape[0], "s"), t), 3)
        return a * jax.nn.one_hot(x, self.vocab_size) + (1.0 - a) / self.vocab_size

    def sample_marginal(self, key: jax.Array, x0: jax.Array, t: jax.Array) -> jax.Array:
        """Draws x_t ~ p_t(. | x_0): x_0 with probability alpha(t), else a uniform id.

        Args:
          key: PRNG key. x0: `[B, ...]` int32 ids in [0, V). t: scalar or `[B]` in [0, 1].

        Returns:
          `[B, ...]` int32 ids in [0, V).
        """
        check_tokens(x0, self.vocab_size, "x0")
        t = batch_time(t, x0.shape[0])
        key_keep, key_new = jax.random.split(key)
        keep = jax.random.uniform(key_keep, x0.shape) < per_example(self.alpha(t), x0.ndim)
        fresh = jax.random.randint(key_new, x0.shape, 0, self.vocab_size, dtype=jnp.int32)
        return jnp.where(keep, x0, fresh).astype(jnp.int32)

    def prior_probs(self) -> jax.Array:
        """The uniform law, `[V]` float32."""
        return jnp.full((self.vocab_size,), 1.0 / self.vocab_size, jnp.float32)

    def sample_prior(self, key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
        """Draws `shape` uniform int32 ids."""
        return jax.random.randint(key, shape, 0, self.vocab_size, dtype=jnp.int32)

    def forward_rates(self, x: jax.Array, t: jax.Array) -> jax.Array:
        """Forward jump rates x -> y = beta(t) / V for y != x. Returns `[B, L, V]`."""
        beta = per_example(self.schedule.rate(batch_time(t, x.shape[0])), 3)
        other = 1.0 - jax.nn.one_hot(x, self.vocab_size)
        return beta * other / self.vocab_size

    def _logs(self, t: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """log alpha, log(1 - alpha), log V as broadcastable `[B, 1, 1]` arrays."""
        log_a = per_example(jnp.log(self.alpha(t)), 3)
        log_1ma = per_example(jnp.log(self.schedule.one_minus_alpha(t)), 3)
        return log_a, log_1ma, jnp.float32(math.log(self.vocab_size))

    def denoiser_to_log_ratios(self, log_p0: jax.Array, x: jax.Array, t: jax.Array) -> jax.Array:
        """Concrete score from a denoiser, in closed form.

        With a = alpha, b = (1 - alpha) / V: r_y = (1 - p(x)) + p(x) b / (a + b) + p(y) a / b
        for y != x (each term non-negative, so no cancellation), and r_x = 1.

        Args:
          log_p0: `[B, L, V]` denoiser logits. x: `[B, L]` ids. t: `[B]`.

        Returns:
          `[B, L, V]` log ratios.

        Reference: Lou et al. 2024 (SEDD); Campbell et al. 2022, eq. (reverse rate from denoiser).
        """
        t = batch_time(t, x.shape[0])
        lp = jax.nn.log_softmax(log_p0.astype(jnp.float32), axis=-1)
        lp_x = jnp.take_along_axis(lp, x[..., None], axis=-1)
        log_a, log_1ma, log_v = self._logs(t)
        log_b_over_ab = log_1ma - jnp.log1p((self.vocab_size - 1) * jnp.exp(log_a))
        log_a_over_b = log_a + log_v - log_1ma
        # p(y) a / b with p(y) = 0 is 0 even at t = 0, where a / b = inf (exact denoisers and
        # the true rates of a one-hot x_0 have log p = -inf): no -inf + inf = NaN.
        impossible = lp == -jnp.inf
        third = jnp.where(impossible, -jnp.inf, jnp.where(impossible, 0.0, lp) + log_a_over_b)
        terms = jnp.stack(
            jnp.broadcast_arrays(log1mexp(lp_x), lp_x + log_b_over_ab, third),
            axis=0,
        )
        log_r = jax.nn.logsumexp(terms, axis=0)
        return jnp.where(jax.nn.one_hot(x, self.vocab_size, dtype=jnp.bool_), 0.0, log_r)

    def log_ratios_to_denoiser(self, log_r: jax.Array, x: jax.Array, t: jax.Array) -> jax.Array:
        """Denoiser log-probabilities from a concrete score (inverse of the map above).

        Solves the V linear equations r_y = 1 - p(x) a/(a+b) + p(y) a/b, sum p = 1 in closed form;
        negative solutions (inexact scores) are clipped to zero. Where alpha(t) = 0 the score
        holds no information and the result is uniform. Returns `[B, L, V]` log-probabilities.
        """
        t = batch_time(t, x.shape[0])
        v = self.vocab_size
        is_x = jax.nn.one_hot(x, v, dtype=jnp.bool_)
        r = jnp.where(is_x, 0.0, jnp.exp(log_r.astype(jnp.float32)))
        alpha = per_example(self.alpha(t), 3)
        one_minus = per_example(self.schedule.one_minus_alpha(t), 3)
        # Double where on alpha = 0 (the uniform answer below): no inf * 0 in the gradient.
        informative = alpha > 0
        c1 = one_minus / (v * jnp.where(informative, alpha, 1.0))
        c2 = one_minus / (1.0 + (v - 1) * alpha)
        total = jnp.sum(r, axis=-1, keepdims=True)
        p_x = (1.0 - c1 * (total - (v - 1))) / (1.0 + (v - 1) * c2)
        p = jnp.where(is_x, p_x, c1 * (r - 1.0) + p_x * c2)
        p = jnp.where(jnp.isfinite(p) & informative, jnp.maximum(p, 0.0), 0.0)
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
        """Reverse rates x -> y = beta(t) / V * r_y (y != x).

        Returns `(scale [B], log_rel [B, L, V])` with rate = scale * exp(log_rel), scale = beta(t).
        Reference: Campbell et al. 2022; Lou et al. 2024 (SEDD).
        """
        t = batch_time(t, x.shape[0])
        if log_r is None:
            log_r = self.denoiser_to_log_ratios(log_p0, x, t)
        log_rel = log_r.astype(jnp.float32) - math.log(self.vocab_size)
        is_x = jax.nn.one_hot(x, self.vocab_size, dtype=jnp.bool_)
        return self.schedule.rate(t), jnp.where(is_x, -jnp.inf, log_rel)

    def posterior_logits(
        self, x: jax.Array, s: jax.Array, t: jax.Array, log_p0: jax.Array
    ) -> jax.Array:
        """Logits of p(x_s | x_t) = sum_x0 p(x_0|x_t) q(x_s|x_0) P(s->t)[x_s, x_t] / q(x_t|x_0).

        Computed in O(V) per token: w = p / q(x_t | .), v = alpha_s w + b_s sum(w),
        p(x_s = y) ~ P(s->t)[y, x_t] v_y. `s < t`: `[B]`. Returns `[B, L, V]`.

        Reference: Austin et al. 2021 (D3PM), the posterior q(x_s | x_t, x_0).
        """
        t = batch_time(t, x.shape[0])
        s = batch_time(s, x.shape[0], "s")
        v = self.vocab_size
        is_x = jax.nn.one_hot(x, v, dtype=jnp.bool_)
        lp = jax.nn.log_softmax(log_p0.astype(jnp.float32), axis=-1)
        log_a_t, log_1ma_t, log_v = self._logs(t)
        log_b_t = log_1ma_t - log_v
        log_q_col = jnp.where(is_x, jnp.logaddexp(log_a_t, log_b_t), log_b_t)
        log_w = lp - log_q_col
        log_a_s, log_1ma_s, _ = self._logs(s)
        log_v_y = jnp.logaddexp(
            log_a_s + log_w, log_1ma_s - log_v + jax.nn.logsumexp(log_w, -1, keepdims=True)
        )
        keep = per_example(self._keep(s, t), 3)
        log_p_col = jnp.where(is_x, jnp.log(keep + (1.0 - keep) / v), jnp.log1p(-keep) - log_v)
        return log_p_col + log_v_y

    def tweedie_logits(
        self, x: jax.Array, s: jax.Array, t: jax.Array, log_r: jax.Array
    ) -> jax.Array:
        """Logits of the Tweedie step p(x_s = y | x_t) ~ P(s->t)[y, x_t] (r @ P(s->t)^-1)_y.

        With a = alpha_t / alpha_s: (r @ P^-1)_y ~ r_y - (1 - a)/V sum_z r_z, clipped at zero (a
        common 1/a factor is dropped, so alpha(t) = 0 stays finite). Returns `[B, L, V]`.

        Reference: Lou et al. 2024 (SEDD), Tweedie tau-leaping.
        """
        t = batch_time(t, x.shape[0])
        s = batch_time(s, x.shape[0], "s")
        v = self.vocab_size
        is_x = jax.nn.one_hot(x, v, dtype=jnp.bool_)
        r = jnp.where(is_x, 1.0, jnp.exp(log_r.astype(jnp.float32)))
        keep = per_example(self._keep(s, t), 3)
        m = r - (1.0 - keep) / v * jnp.sum(r, axis=-1, keepdims=True)
        col = jnp.where(is_x, keep + (1.0 - keep) / v, (1.0 - keep) / v)
        p = col * jnp.maximum(m, 0.0)
        logits = jnp.where(p > 0, jnp.log(jnp.where(p > 0, p, 1.0)), -jnp.inf)
        return stay_if_degenerate(logits, x)
