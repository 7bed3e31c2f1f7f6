"""The interface every discrete forward process implements, and the array helpers they share.

Conventions (used by every process, loss and sampler in `diffax.discrete`):

* Each token is an independent CTMC on S states with rate matrix Q(t) = beta(t) Q_base, where
  beta(t) = sigma_bar'(t) comes from the schedule. Row-stochastic convention: Q[x, y] is the rate
  of jumping from x to y (rows sum to zero), P(s -> t) = expm((sigma_bar(t) - sigma_bar(s)) Q_base)
  and marginals are row vectors, p_t = p_s @ P(s -> t). The marginal of clean data is
  q_t(. | x_0) = `marginal_matrix(t)`[x_0] = expm(sigma_bar(t) Q_base)[x_0]; it equals
  P(0 -> t) when sigma_bar(0) = 0 (all schedules except `GeometricSchedule`).
* The denoiser predicts V = `vocab_size` classes; S = `num_states` = V + 1 for `Masked` (the mask
  id V is a state but never a clean value) and S = V otherwise. `num_input_ids` = S.
* Reverse rates are returned as `(scale [B], log_rel [B, L, S])` with rate = scale * exp(log_rel)
  (zero at y = x_t). Splitting off the time factor keeps them finite where beta(t) is infinite
  (beta(1) = inf for the linear schedule), and lets losses take log-ratios of rates exactly.
* "concrete score" (Meng et al. 2022; Lou et al. 2024): log r[b, l, y] = log p_t(x with x^l <- y)
  - log p_t(x), for y in the V clean ids. It is only used where Q_base[y, x^l] > 0.
"""

from __future__ import annotations

from typing import Protocol

import jax
import jax.numpy as jnp

from diffax.core import check_choice
from diffax.core.arrays import log_one_hot, safe_log
from diffax.discrete.schedules import Schedule

HIGHEST = jax.lax.Precision.HIGHEST

#: What a discrete network can predict (see `diffax.discrete.parameterizations`).
PREDICTIONS = ("denoiser", "concrete_score")


class Process(Protocol):
    """A per-token independent CTMC (see the module docstring for conventions).

    Every loss, sampler and likelihood routine in `diffax.discrete` reads a process only through
    these members, so a user-written class that implements them (no subclassing needed) works
    wherever its math allows. `mask_id` decides absorbing behaviour: `masked_elbo`, the
    masked-only samplers and exact decoding of unmasked tokens need `mask_id is not None`.

    Shapes: `x`, `x0`: `[B, L]` int32; `s`, `t`: `[B]` (or scalars) with s < t;
    `log_p0`: `[B, L, V]` denoiser log-probabilities; `log_r`: `[B, L, V]` log concrete scores.
    """

    vocab_size: int
    schedule: Schedule

    @property
    def mask_id(self) -> int | None:
        """The absorbing (mask) state's id, or None if the process has no absorbing state."""
        ...

    @property
    def num_states(self) -> int:
        """S, the number of states a token can take at t > 0."""
        ...

    @property
    def num_input_ids(self) -> int:
        """How many ids a network reading x_t must embed (= S)."""
        ...

    @property
    def rates_converge_at_alpha0(self) -> bool:
        """Whether, with a denoiser, model and true reverse rates meet where alpha(t) = 0.

        True when every row of P(0 -> t) tends to one law fast enough (spectral gap > 1/2 in
        the clock -log alpha) that the rate-KL integrand tends to 0 as alpha(t) -> 0; the
        losses then return that limit at alpha(t) = 0 instead of refusing the time.
        """
        ...

    def check_prediction(self, prediction: str) -> None:
        """Raises `ValueError` naming `prediction` if this process cannot use it."""
        ...

    def prior_kl(self, x0: jax.Array) -> jax.Array:
        """sum_l KL(q(x_1^l | x_0^l) || prior) in nats. `x0`: `[B, L]` -> `[B]` float32."""
        ...

    def alpha(self, t: jax.Array) -> jax.Array:
        """The schedule's alpha(t) (probability a token is untouched by time t)."""
        ...

    def generator(self, t: jax.Array) -> jax.Array:
        """Q(t) = beta(t) Q_base. `t`: `[B]` -> `[B, S, S]`."""
        ...

    def transition_matrix(self, s: jax.Array, t: jax.Array) -> jax.Array:
        """P(s -> t), row-stochastic. `[B]`, `[B]` -> `[B, S, S]`."""
        ...

    def transition_probs(self, x: jax.Array, s: jax.Array, t: jax.Array) -> jax.Array:
        """Rows P(s -> t)[x, :]. Returns `[B, L, S]`."""
        ...

    def marginal_matrix(self, t: jax.Array) -> jax.Array:
        """q_t(x_t | x_0) as a `[B, S, S]` matrix (rows: x_0)."""
        ...

    def marginal_probs(self, x0: jax.Array, t: jax.Array) -> jax.Array:
        """Rows q_t(. | x_0). Returns `[B, L, S]`."""
        ...

    def sample_marginal(self, key: jax.Array, x0: jax.Array, t: jax.Array) -> jax.Array:
        """Draws x_t ~ q_t(. | x_0). Returns `[B, L]` int32."""
        ...

    def prior_probs(self) -> jax.Array:
        """Law of one token at t = 1, `[S]` float32."""
        ...

    def sample_prior(self, key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
        """Draws `shape` int32 tokens from the prior."""
        ...

    def forward_rates(self, x: jax.Array, t: jax.Array) -> jax.Array:
        """Forward jump rates x -> y (zero at y = x). Returns `[B, L, S]`."""
        ...

    def reverse_rates(
        self,
        x: jax.Array,
        t: jax.Array,
        *,
        log_p0: jax.Array | None = None,
        log_r: jax.Array | None = None,
    ) -> tuple[jax.Array, jax.Array]:
        """Reverse rates from a denoiser or a concrete score: `(scale [B], log_rel [B, L, S])`."""
        ...

    def posterior_logits(
        self, x: jax.Array, s: jax.Array, t: jax.Array, log_p0: jax.Array
    ) -> jax.Array:
        """Logits of p(x_s | x_t) under the denoiser (ancestral step). Returns `[B, L, S]`."""
        ...

    def tweedie_logits(
        self, x: jax.Array, s: jax.Array, t: jax.Array, log_r: jax.Array
    ) -> jax.Array:
        """Logits of the Tweedie step p(x_s | x_t) from a concrete score. Returns `[B, L, S]`."""
        ...

    def denoiser_to_log_ratios(self, log_p0: jax.Array, x: jax.Array, t: jax.Array) -> jax.Array:
        """Concrete score `[B, L, V]` implied by denoiser logits."""
        ...

    def log_ratios_to_denoiser(self, log_r: jax.Array, x: jax.Array, t: jax.Array) -> jax.Array:
        """Denoiser log-probabilities `[B, L, V]` implied by a concrete score."""
        ...


def check_prediction_name(prediction: str) -> None:
    """Raises `ValueError` unless `prediction` is one of `PREDICTIONS`."""
    check_choice(prediction, PREDICTIONS, "prediction")


def prior_kl_from_marginal(process: Process, x0: jax.Array) -> jax.Array:
    """sum_l KL(q_1(. | x_0^l) || prior) from `marginal_probs(x0, 1)` and `prior_probs()`.

    The generic form of `Process.prior_kl` (any process). `x0`: `[B, L]` -> `[B]` float32.
    """
    batch = x0.shape[0]
    q = process.marginal_probs(x0, jnp.ones((batch,), jnp.float32))
    log_prior = safe_log(process.prior_probs())
    kl = jnp.where(q > 0, q * (safe_log(q) - log_prior), 0.0)
    return jnp.sum(kl.reshape(batch, -1), axis=-1)


def stay_if_degenerate(logits: jax.Array, x: jax.Array) -> jax.Array:
    """Replaces rows whose logits are all -inf (nothing has positive mass) by a point mass at x.

    Used by steps that clip signed estimates to zero (Tweedie steps with inexact scores), where an
    entire row can vanish; keeping the current token is the conservative choice.
    """
    dead = jnp.all(logits == -jnp.inf, axis=-1, keepdims=True)
    return jnp.where(dead, log_one_hot(x, logits.shape[-1]), logits)


def gather_last(table: jax.Array, x: jax.Array) -> jax.Array:
    """`table[b, x[b, l], :]` for a batched `[B, S, S]` table and `[B, L]` ids -> `[B, L, S]`."""
    return table[jnp.arange(table.shape[0])[:, None], x]


def gather_column(table: jax.Array, x: jax.Array) -> jax.Array:
    """`table[b, :, x[b, l]]` for a batched `[B, S, S]` table and `[B, L]` ids -> `[B, L, S]`."""
    return gather_last(jnp.swapaxes(table, 1, 2), x)
