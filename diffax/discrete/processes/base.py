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

from diffax.core.arrays import log_one_hot
from diffax.discrete.schedules import Schedule

HIGHEST = jax.lax.Precision.HIGHEST


class Process(Protocol):
    """A per-token independent CTMC (see the module docstring for conventions).

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
    def num_states(self) -> int: ...

    @property
    def num_input_ids(self) -> int: ...

    def alpha(self, t: jax.Array) -> jax.Array: ...

    def generator(self, t: jax.Array) -> jax.Array: ...

    def transition_matrix(self, s: jax.Array, t: jax.Array) -> jax.Array: ...

    def transition_probs(self, x: jax.Array, s: jax.Array, t: jax.Array) -> jax.Array: ...

    def marginal_matrix(self, t: jax.Array) -> jax.Array: ...

    def marginal_probs(self, x0: jax.Array, t: jax.Array) -> jax.Array: ...

    def sample_marginal(self, key: jax.Array, x0: jax.Array, t: jax.Array) -> jax.Array: ...

    def prior_probs(self) -> jax.Array: ...

    def sample_prior(self, key: jax.Array, shape: tuple[int, ...]) -> jax.Array: ...

    def forward_rates(self, x: jax.Array, t: jax.Array) -> jax.Array: ...

    def reverse_rates(
        self,
        x: jax.Array,
        t: jax.Array,
        *,
        log_p0: jax.Array | None = None,
        log_r: jax.Array | None = None,
    ) -> tuple[jax.Array, jax.Array]: ...

    def posterior_logits(
        self, x: jax.Array, s: jax.Array, t: jax.Array, log_p0: jax.Array
    ) -> jax.Array: ...

    def tweedie_logits(
        self, x: jax.Array, s: jax.Array, t: jax.Array, log_r: jax.Array
    ) -> jax.Array: ...

    def denoiser_to_log_ratios(
        self, log_p0: jax.Array, x: jax.Array, t: jax.Array
    ) -> jax.Array: ...

    def log_ratios_to_denoiser(self, log_r: jax.Array, x: jax.Array, t: jax.Array) -> jax.Array: ...


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
