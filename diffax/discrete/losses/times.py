"""Time sampling for Monte-Carlo estimates of the continuous-time objectives."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp

from diffax.core import check_positive_int
from diffax.core.validation import check_time_range


def stratified_times(
    key: jax.Array, batch: int, *, t_min: float = 0.0, t_max: float = 1.0
) -> jax.Array:
    """Stratified times t_i = t_min + (t_max - t_min) (1 - ((u + i / B) mod 1)), i < B.

    One uniform offset u shared by the batch puts exactly one time in each of B equal strata,
    which lowers the variance of the Monte-Carlo ELBO. Times lie in (t_min, t_max] rather than
    [t_min, t_max) so that with the default t_min = 0 the 1/t-type ELBO weights stay finite.

    Args:
      key: PRNG key. batch: B (>= 1).
      t_min, t_max: the time interval, 0 <= t_min < t_max <= 1 (default the whole of (0, 1]).
        Pass t_max < 1 to keep clear of t = 1, where concrete-score losses of processes with
        alpha(1) = 0 are infinite.

    Returns:
      `[B]` float32 times.

    Reference: Kingma et al. 2021 (VDM), low-discrepancy time sampling.
    """
    batch = check_positive_int(batch, "batch")
    check_time_range(t_min, t_max)
    u = jax.random.uniform(key, ())
    v = 1.0 - jnp.mod(u + jnp.arange(batch, dtype=jnp.float32) / batch, 1.0)
    return t_min + (t_max - t_min) * v


def antithetic_times(
    key: jax.Array, batch: int, *, t_min: float = 0.0, t_max: float = 1.0
) -> jax.Array:
    """Deprecated name of `stratified_times` (same values; "antithetic" means u, 1 - u pairs).

    Emits a `DeprecationWarning`. `[B]` float32 times in (t_min, t_max].
    """
    warnings.warn(
        "diffax.discrete.antithetic_times is deprecated: it draws a stratified grid, so it is "
        "now called stratified_times (same arguments and values)",
        DeprecationWarning,
        stacklevel=2,
    )
    return stratified_times(key, batch, t_min=t_min, t_max=t_max)
