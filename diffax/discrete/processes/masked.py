"""The masked (absorbing-state) CTMC.

Each token independently jumps to the mask id V (= `vocab_size`) at rate beta(t) and stays there:
p_t(x_t | x_0) = alpha(t) [x_t = x_0] + (1 - alpha(t)) [x_t = mask]. Over the S = V + 1 states,
Q_base[x, mask] = 1, Q_base[x, x] = -1 for clean x, and the mask row is zero; in the row-stochastic
convention P(s -> t) = a I + (1 - a) 1 e_mask^T on clean rows with a = alpha(t) / alpha(s), and the
mask row is absorbing. The network sees V + 1 input ids and predicts V classes.

The exact denoiser p(x_0^l | x_t) does not depend on t (Ou et al. 2024; Zheng et al. 2024), which is
what makes time-free networks and p(x_0) caching valid for this process.

Reference: Austin et al. 2021 (D3PM); Shi et al. 2024 (MD4); Sahoo et al. 2024 (MDLM).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from diffax.core import batch_time, check_positive_int, check_tokens, pytree_dataclass, static_field
from diffax.core.arrays import log_one_hot, per_example
from diffax.discrete.processes.base import check_prediction_name, stay_if_degenerate
from diffax.discrete.schedules import LinearSchedule, Schedule, check_schedule


@pytree_dataclass
class Masked:
    """Masked (absorbing) diffusion over a vocabulary of `vocab_size` clean tokens.

    Args:
      vocab_size: V, the number of clean token ids; the mask id is V.
      schedule: a noise schedule (default `LinearSchedule()`, alpha = 1 - t).

    The prior is the law of x_1: each token is the mask with probability 1 - alpha(1) and a
    uniform clean token otherwise (all-mask for schedules with alpha(1) = 0, such as the default).
    """

    vocab_size: int = static_field()
    schedule: Schedule = static_field(default_factory=LinearSchedule)

    def __post_init__(self):
        check_schedule(self.schedule)
        check_positive_int(self.vocab_size, "vocab_size")

    @property
    def mask_id(self) -> int:
        """The id of the absorbing mask state (= vocab_size)."""
        return self.vocab_size

    @property
    def num_states(self) -> int:
        """S = V + 1 (the clean ids and the mask)."""
        return self.vocab_size + 1

    @property
    def num_input_ids(self) -> int:
        """How many ids a network reading x_t must embed (V clean ids + the mask)."""
        return self.vocab_size + 1

    @property
    def rates_converge_at_alpha0(self) -> bool:
        """False: the endpoints of the masked bound need no limit (nothing is masked at
        alpha = 1, and the masking rate is finite at alpha = 0)."""
        return False

    def check_prediction(self, prediction: str) -> None:
        """Refuses an unknown `prediction`, and "concrete_score" when alpha(1) = 0.

        The masked concrete score p alpha / (1 - alpha) vanishes where alpha(t) = 0, so it
        cannot be learned or read there; `LogLinearSchedule(eps)` keeps alpha(1) > 0.
        """
        check_prediction_name(prediction)
        if prediction == "concrete_score" and self.schedule.alpha_at(1.0) == 0.0:
            raise ValueError(
                "prediction='concrete_score' with a Masked process needs alpha(1) > 0 (the "
                "masked concrete score vanishes where alpha(t) = 0); use e.g. "
                "LogLinearSchedule(eps) or prediction='denoiser'"
            )

    def prior_kl(self, x0: jax.Array) -> jax.Array:
        """alpha(1) log V per token (zero when alpha(1) = 0). `x0`: `[B, L]` -> `[B]` float32."""
        per_token = self.schedule.alpha_at(1.0) * math.log(self.vocab_size)
        return jnp.full((x0.shape[0],), math.prod(x0.shape[1:]) * per_token, jnp.float32)

    def alpha(self, t: jax.Array) -> jax.Array:
        """Probability that a token is still unmasked (holds its clean value) at time t."""
        return self.schedule.alpha(t)

    def base_rate_matrix(self) -> np.ndarray:
        """Q_base as a float64 `[S, S]` NumPy array (rows sum to zero)."""
        q = np.zeros((self.num_states, self.num_states))
        q[: self.vocab_size, : self.vocab_size] = -np.eye(self.vocab_size)
        q[: self.vocab_size, self.mask_id] = 1.0
        return q

    def generator(self, t: jax.Array) -> jax.Array:
        """Forward generator Q(t) = beta(t) Q_base. `t`: `[B]` -> `[B, S, S]`."""
        beta = self.schedule.rate(jnp.atleast_1d(t))
        return beta[:, None, None] * jnp.asarray(self.base_rate_matrix(), jnp.float32)

    def transition_matrix(self, s: jax.Array, t: jax.Array) -> jax.Array:
        """P(s -> t) for s <= t. `s`, `t`: `[B]` -> `[B, S, S]` (row-stochastic)."""
        s, t = jnp.atleast_1d(s), jnp.atleast_1d(t)
        return self._matrix(self.alpha(t) / self.alpha(s))

    def marginal_matrix(self, t: jax.Array) -> jax.Array:
        """q_t(x_t | x_0) from clean data (alpha(t) keeps a token). `[B]` -> `[B, S, S]`."""
        t = jnp.atleast_1d(t)
        return self._matrix(self.alpha(t), self.schedule.one_minus_alpha(t))

    def _matrix(self, a: jax.Array, one_minus: jax.Array | None = None) -> jax.Array:
        one_minus = (1.0 - a if one_minus is None else one_minus)[:, None, None]
        a = a[:, None, None]
        eye = jnp.eye(self.num_states, dtype=jnp.float32)
        to_mask = jnp.zeros((self.num_states, self.num_states)).at[:, self.mask_id].set(1.0)
        clean = jnp.arange(self.num_states)[:, None] < self.vocab_size
        return jnp.where(clean, a * eye + one_minus * to_mask, to_mask)

    def marginal_probs(self, x0: jax.Array, t: jax.Array) -> jax.Array:
        """Rows q_t(. | x_0). `x0`: `[B, L]` ids in [0, V]; returns `[B, L, S]`."""
        t = batch_time(t, x0.shape[0])
        one_minus = per_example(self.schedule.one_minus_alpha(t), 3)
        return self._rows(x0, per_example(self.alpha(t), 3), one_minus)

    def _rows(self, x: jax.Array, a: jax.Array, one_minus: jax.Array | None = None) -> jax.Array:
        one_minus = 1.0 - a if one_minus is None else one_minus
        stay = jax.nn.one_hot(x, self.num_states)
        mask = jax.nn.one_hot(jnp.full_like(x, self.mask_id), self.num_states)
        clean = (x != self.mask_id)[..., None]
        return jnp.where(clean, a * stay + one_minus * mask, mask)

    def transition_probs(self, x: jax.Array, s: jax.Array, t: jax.Array) -> jax.Array:
        """Rows P(s -> t)[x, :]. `x`: `[B, L]` ids in [0, V]; returns `[B, L, S]`."""
        t = batch_time(t, x.shape[0])
        s = batch_time(s, x.shape[0], "s")
        return self._rows(x, per_example(self.alpha(t) / self.alpha(s), 3))

    def sample_marginal(self, key: jax.Array, x0: jax.Array, t: jax.Array) -> jax.Array:
        """Draws x_t ~ p_t(. | x_0).

        Args:
          key: PRNG key.
          x0: `[B, ...]` int32 clean tokens in [0, V).
          t: scalar or `[B]` times in [0, 1].

        Returns:
          `[B, ...]` int32 tokens in [0, V] (V = mask).
        """
        check_tokens(x0, self.vocab_size, "x0")
        t = batch_time(t, x0.shape[0])
        alpha = per_example(self.alpha(t), x0.ndim)
        keep = jax.random.uniform(key, x0.shape) < alpha
        return jnp.where(keep, x0, self.mask_id).astype(jnp.int32)

    def prior_probs(self) -> jax.Array:
        """Law of one token at t = 1: `[S]` float32."""
        a1 = self.schedule.alpha_at(1.0)
        probs = np.full(self.num_states, a1 / self.vocab_size)
        probs[self.mask_id] = 1.0 - a1
        return jnp.asarray(probs, jnp.float32)

    def sample_prior(self, key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
        """Draws `shape` int32 tokens from the prior (all masks when alpha(1) = 0)."""
        if self.schedule.alpha_at(1.0) == 0.0:
            return jnp.full(shape, self.mask_id, dtype=jnp.int32)
        return jax.random.categorical(key, jnp.log(self.prior_probs()), shape=shape).astype(
            jnp.int32
        )

    def forward_rates(self, x: jax.Array, t: jax.Array) -> jax.Array:
        """Forward jump rates x -> y (zero at y = x). `x`: `[B, L]`, `t`: `[B]` -> `[B, L, S]`."""
        beta = per_example(self.schedule.rate(batch_time(t, x.shape[0])), 3)
        to_mask = jax.nn.one_hot(jnp.full_like(x, self.mask_id), self.num_states)
        return jnp.where((x != self.mask_id)[..., None], beta * to_mask, 0.0)

    def _log_odds(self, t: jax.Array) -> jax.Array:
        """log(alpha / (1 - alpha)) as `[B, 1, 1]`."""
        return per_example(jnp.log(self.alpha(t)) - jnp.log(self.schedule.one_minus_alpha(t)), 3)

    def _with_mask_column(self, clean: jax.Array, mask_value: jax.Array) -> jax.Array:
        """Appends the mask state to `[B, L, V]` values -> `[B, L, S]`."""
        mask_value = jnp.broadcast_to(mask_value, clean.shape[:-1] + (1,))
        return jnp.concatenate([clean, mask_value.astype(clean.dtype)], axis=-1)

    def reverse_rates(
        self,
        x: jax.Array,
        t: jax.Array,
        *,
        log_p0: jax.Array | None = None,
        log_r: jax.Array | None = None,
    ) -> tuple[jax.Array, jax.Array]:
        """Reverse rates x_t -> y from a denoiser or a concrete score.

        A masked token is revealed as y at rate -alpha'/(1 - alpha) p(x_0 = y | x_t); unmasked
        tokens never change. Returns `(scale [B], log_rel [B, L, S])` with
        rate = scale * exp(log_rel), scale = -alpha'(t) / (1 - alpha(t)).

        Reference: Campbell et al. 2022; Lou et al. 2024 (SEDD), absorbing reverse rates.
        """
        t = batch_time(t, x.shape[0])
        if log_p0 is None:
            # From the score r = p alpha / (1 - alpha): p = r (1 - alpha) / alpha (unnormalised).
            log_p0 = log_r.astype(jnp.float32) - self._log_odds(t)
        else:
            log_p0 = jax.nn.log_softmax(log_p0.astype(jnp.float32), axis=-1)
        log_rel = self._with_mask_column(log_p0.astype(jnp.float32), -jnp.inf)
        masked = (x == self.mask_id)[..., None]
        return self.schedule.masking_rate(t), jnp.where(masked, log_rel, -jnp.inf)

    def posterior_logits(
        self, x: jax.Array, s: jax.Array, t: jax.Array, log_p0: jax.Array
    ) -> jax.Array:
        """Logits of p(x_s | x_t) = sum_x0 p(x_0 | x_t) q(x_s | x_t, x_0) (ancestral step).

        A masked token is revealed with probability (alpha(s) - alpha(t)) / (1 - alpha(t)) as a
        draw from the denoiser; unmasked tokens stay. `s < t`: `[B]`. Returns `[B, L, S]`.

        Reference: Austin et al. 2021 (D3PM); Sahoo et al. 2024 (MDLM), eq. 7.
        """
        t = batch_time(t, x.shape[0])
        s = batch_time(s, x.shape[0], "s")
        one_minus_t = self.schedule.one_minus_alpha(t)
        log_reveal = jnp.log(self.alpha(s) - self.alpha(t)) - jnp.log(one_minus_t)
        log_stay = jnp.log(self.schedule.one_minus_alpha(s)) - jnp.log(one_minus_t)
        logits = self._with_mask_column(
            jax.nn.log_softmax(log_p0.astype(jnp.float32), axis=-1) + per_example(log_reveal, 3),
            per_example(log_stay, 3),
        )
        masked = (x == self.mask_id)[..., None]
        return jnp.where(masked, logits, log_one_hot(x, self.num_states))

    def reveal_probability(self, s: jax.Array, t: jax.Array) -> jax.Array:
        """P(a token masked at t is revealed by s) = (alpha(s) - alpha(t)) / (1 - alpha(t)).

        The masked posterior `posterior_logits` as a reveal decision: a masked token is revealed
        with this probability, as a draw from the denoiser, and otherwise stays masked. Samplers
        use it to draw one Bernoulli per position and one class per revealed position instead
        of a draw over S = V + 1 states. `s < t`: scalars or `[B]`. Returns `[B]` float32 (1
        where alpha(t) = 1).

        Reference: Sahoo et al. 2024 (MDLM), eq. 7.
        """
        t, s = jnp.atleast_1d(t), jnp.atleast_1d(s)
        one_minus_t = self.schedule.one_minus_alpha(t)
        gain = self.alpha(s) - self.alpha(t)
        return jnp.where(one_minus_t > 0, gain / jnp.where(one_minus_t > 0, one_minus_t, 1.0), 1.0)

    def tweedie_logits(
        self, x: jax.Array, s: jax.Array, t: jax.Array, log_r: jax.Array
    ) -> jax.Array:
        """Logits of the Tweedie step p(x_s | x_t) ~ P(s->t)[., x_t] (r @ P(s->t)^-1)[.].

        For a masked token: reveal y with weight (alpha_s - alpha_t) / alpha_t r_y, stay masked
        with weight 1 - (alpha_s - alpha_t) / alpha_t sum_y r_y (clipped at zero). Needs
        alpha(t) > 0. `s < t`: `[B]`. Returns `[B, L, S]`.

        Reference: Lou et al. 2024 (SEDD), Tweedie tau-leaping.
        """
        t = batch_time(t, x.shape[0])
        s = batch_time(s, x.shape[0], "s")
        gain = per_example((self.alpha(s) - self.alpha(t)) / self.alpha(t), 3)
        log_r = log_r.astype(jnp.float32)
        stay = 1.0 - gain * jnp.sum(jnp.exp(log_r), axis=-1, keepdims=True)
        logits = self._with_mask_column(log_r + jnp.log(gain), jnp.log(jnp.maximum(stay, 0.0)))
        logits = stay_if_degenerate(logits, x)
        masked = (x == self.mask_id)[..., None]
        return jnp.where(masked, logits, log_one_hot(x, self.num_states))

    def denoiser_to_log_ratios(self, log_p0: jax.Array, x: jax.Array, t: jax.Array) -> jax.Array:
        """log r_y = log p(x_0 = y | x_t) + log(alpha / (1 - alpha)) for a masked x_t^l.

        Returns `[B, L, V]` (meaningful at masked positions; elsewhere the reverse rates vanish).
        Reference: Lou et al. 2024 (SEDD), absorbing concrete score.
        """
        t = batch_time(t, x.shape[0])
        return jax.nn.log_softmax(log_p0.astype(jnp.float32), axis=-1) + self._log_odds(t)

    def log_ratios_to_denoiser(self, log_r: jax.Array, x: jax.Array, t: jax.Array) -> jax.Array:
        """Denoiser log-probabilities from a concrete score: p(x_0 | x_t) = softmax(log r).

        The time factor alpha / (1 - alpha) is common to all classes, so it drops out. Returns
        `[B, L, V]`.
        """
        del x, t
        return jax.nn.log_softmax(log_r.astype(jnp.float32), axis=-1)
