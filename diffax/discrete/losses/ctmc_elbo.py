"""The continuous-time ELBO of any CTMC diffusion, model rates from a denoiser (Campbell et al.)."""

from __future__ import annotations

import jax

from diffax.discrete.losses.rate_kl import rate_kl_bound
from diffax.discrete.parameterizations import ModelFn
from diffax.discrete.processes import Process


def ctmc_elbo(
    key: jax.Array,
    process: Process,
    model_fn: ModelFn,
    x0: jax.Array,
    t: jax.Array | None = None,
    *,
    prediction: str = "denoiser",
    weight: jax.Array | None = None,
) -> jax.Array:
    """Single-sample Monte-Carlo negative ELBO of any CTMC diffusion, in nats per sequence.

    The model's reverse rates come from its denoiser (default) or concrete score. For `Masked`
    with a denoiser this equals `masked_elbo` term by term.

    Args:
      key: PRNG key.
      process: any `Process` (`Masked`, `Uniform`, `General` or your own).
      model_fn: `(tokens [B, L] int32, t [B]) -> [B, L, V]`.
      x0: `[B, L]` int32 clean tokens.
      t: optional `[B]` times; default stratified times over the batch. Endpoints where the
        integrand is infinite are refused (see `diffax.discrete.losses.rate_kl`).
      prediction: "denoiser" or "concrete_score".
      weight: optional `[B]` factor on the time integrand (1 / q(t) when t is drawn from q).

    Returns:
      `[B]` float32 negative ELBO in nats.

    Reference: Campbell et al. 2022, A Continuous Time Framework for Discrete Denoising Models.
    """
    return rate_kl_bound(key, process, model_fn, x0, t, prediction, weight, "ctmc_elbo").total
