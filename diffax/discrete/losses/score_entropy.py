"""Denoising score entropy (SEDD): the rate-KL ELBO with the model rates from a concrete score."""

from __future__ import annotations

import jax

from diffax.discrete.losses.rate_kl import rate_kl_bound
from diffax.discrete.parameterizations import ModelFn
from diffax.discrete.processes import Process


def score_entropy(
    key: jax.Array,
    process: Process,
    model_fn: ModelFn,
    x0: jax.Array,
    t: jax.Array | None = None,
    *,
    prediction: str = "concrete_score",
    weight: jax.Array | None = None,
) -> jax.Array:
    """Denoising score entropy (with its constant), a negative ELBO in nats per sequence.

    sum_{y != x_t} Q(t)[y, x_t] (s_y - r_y log s_y + K(r_y)), s = exp(model log ratios),
    r_y = q_t(y | x_0) / q_t(x_t | x_0), K(a) = a (log a - 1). Same value as `ctmc_elbo`;
    the default parameterization is the concrete score.

    Args:
      key: PRNG key. process: any process (`Masked` needs alpha(1) > 0 for concrete scores).
      model_fn: `(tokens, t) -> [B, L, V]` log concrete scores (or denoiser logits).
      x0: `[B, L]` int32. t: optional `[B]` times. prediction: "concrete_score" or "denoiser".
      weight: optional `[B]` factor on the time integrand (1 / q(t) when t is drawn from q).

    Returns:
      `[B]` float32 negative ELBO in nats.

    Reference: Lou et al. 2024, Discrete Diffusion Modeling by Estimating the Ratios of the Data
    Distribution (SEDD), eq. 8 and Thm. 3.6.
    """
    return rate_kl_bound(key, process, model_fn, x0, t, prediction, weight, "score_entropy").total
