"""The masked-diffusion ELBO: a weighted cross-entropy on the masked positions.

The network may return logits `[B, L, V]` or a `LinearHead` (hidden states and the output
projection); with a `LinearHead` the cross-entropy runs in vocab chunks with a custom gradient
(`diffax.core.chunked_cross_entropy`), so `[B, L, V]` logits never exist.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from diffax.core import LinearHead, batch_time, check_choice
from diffax.discrete.losses.elbo_terms import ELBOTerms
from diffax.discrete.losses.endpoints import prior_kl, reconstruction
from diffax.discrete.losses.times import stratified_times
from diffax.discrete.parameterizations import ModelFn, check_sequences, denoiser_nll
from diffax.discrete.processes import Process


def masked_elbo_terms(
    process: Process, logits: jax.Array | LinearHead, x0: jax.Array, xt: jax.Array, t: jax.Array
) -> jax.Array:
    """Per-token integrand of the masked continuous-time negative ELBO, in nats.

    -alpha'(t) / (1 - alpha(t)) * [x_t = mask] * (-log p_theta(x_0 | x_t)).

    Args:
      process: an absorbing process (`Masked` or another with `mask_id` not None).
      logits: `[B, L, V]` denoiser logits of p(x_0 | x_t), or a `LinearHead` (hidden
        `[B, L, D]`): the cross-entropy is then computed in vocab chunks, never `[B, L, V]`.
      x0: `[B, L]` int32 clean tokens; xt: `[B, L]` int32 noisy tokens; t: `[B]` times.

    Returns:
      `[B, L]` float32 weighted cross-entropies (zero where x_t is not masked).

    Reference: Shi et al. 2024 (MD4), eq. 5; Sahoo et al. 2024 (MDLM), eq. 10.
    """
    return _weighted_terms(process, denoiser_nll(process, logits, x0)[0], x0, xt, t)


def _weighted_terms(
    process: Process, nll: jax.Array, x0: jax.Array, xt: jax.Array, t: jax.Array
) -> jax.Array:
    weight = process.schedule.masking_rate(t).reshape((-1,) + (1,) * (x0.ndim - 1))
    masked = xt == process.mask_id
    # The weight is infinite at t = 0 (alpha = 1), where no token is masked; zeroing it on
    # unmasked positions keeps inf * 0 out of the gradient of the unused branch.
    weight = jnp.where(masked, weight, 0.0)
    return jnp.where(masked, weight * nll, 0.0)


def masked_bound(
    key: jax.Array,
    process: Process,
    model_fn: ModelFn,
    x0: jax.Array,
    t: jax.Array | None = None,
    *,
    weight: jax.Array | None = None,
) -> ELBOTerms:
    """The terms of `masked_elbo` (same arguments, denoiser only): `ELBOTerms`, each `[B]`."""
    return masked_bound_with_log_z(key, process, model_fn, x0, t, weight=weight)[0]


def masked_bound_with_log_z(
    key: jax.Array,
    process: Process,
    model_fn: ModelFn,
    x0: jax.Array,
    t: jax.Array | None = None,
    *,
    weight: jax.Array | None = None,
) -> tuple[ELBOTerms, jax.Array, jax.Array]:
    """`masked_bound` plus what a z-loss on the denoiser needs, from the same network call.

    Args:
      key, process, model_fn, x0, t, weight: as `masked_elbo` (model_fn may return a
        `LinearHead`).

    Returns:
      `(terms, log_z, masked)`: the `ELBOTerms` (each `[B]`), `[B, L]` float32 log-partition
      logsumexp of the denoiser logits at t, and the `[B, L]` bool positions of the diffusion
      term (x_t = mask), where a z-loss mean(log_z^2) belongs.

    Reference: Chowdhery et al. 2022 (PaLM), the z-loss; Shi et al. 2024 (MD4).
    """
    if process.mask_id is None:
        raise TypeError(
            f"masked_elbo needs process=Masked or another absorbing process (mask_id not None), "
            f"got {type(process).__name__} without a mask state; use ctmc_elbo or score_entropy "
            "for other processes"
        )
    check_sequences(x0, process.vocab_size, "x0")
    key_t, key_x, key_0 = jax.random.split(key, 3)
    t = stratified_times(key_t, x0.shape[0]) if t is None else batch_time(t, x0.shape[0])
    xt = process.sample_marginal(key_x, x0, t)
    nll, log_z = denoiser_nll(process, model_fn(xt, t), x0)
    terms = _weighted_terms(process, nll, x0, xt, t)
    diffusion = jnp.sum(terms.reshape(x0.shape[0], -1), axis=-1)
    if weight is not None:
        diffusion = diffusion * weight
    elbo_terms = ELBOTerms(
        prior=prior_kl(process, x0),
        reconstruction=reconstruction(key_0, process, model_fn, x0, "denoiser"),
        diffusion=diffusion,
    )
    return elbo_terms, log_z, xt == process.mask_id


def masked_elbo(
    key: jax.Array,
    process: Process,
    model_fn: ModelFn,
    x0: jax.Array,
    t: jax.Array | None = None,
    *,
    prediction: str = "denoiser",
    weight: jax.Array | None = None,
) -> jax.Array:
    """Single-sample Monte-Carlo estimate of the masked-diffusion negative ELBO per sequence.

    -ELBO(x_0) = int_0^1 -alpha'(t) / (1 - alpha(t)) E_{x_t}[sum_{l: x_t^l = mask}
    -log p_theta(x_0^l | x_t)] dt (+ a reconstruction term if alpha(0) < 1 and the prior term
    alpha(1) L log V if alpha(1) > 0). For the exact denoiser the bound is tight.

    Args:
      key: PRNG key.
      process: an absorbing process (`mask_id` not None): `Masked`, or any `Process` whose
        tokens jump to `mask_id` at rate -alpha'/alpha and stay there.
      model_fn: `(tokens [B, L] int32, t [B]) -> logits [B, L, V]`, or a `LinearHead` with
        hidden `[B, L, D]` (cross-entropy in vocab chunks, no `[B, L, V]` logits).
      x0: `[B, L]` int32 clean tokens in [0, V).
      t: optional `[B]` times; default stratified times over the batch.
      prediction: must be "denoiser" (use `score_entropy` for concrete-score networks).
      weight: optional `[B]` factor on the time integrand (1 / q(t) when t is drawn from q).

    Returns:
      `[B]` float32 negative ELBO in nats per sequence.

    Reference: Shi et al. 2024 (MD4), eq. 5; Sahoo et al. 2024 (MDLM).
    """
    check_choice(prediction, ("denoiser",), "prediction")
    return masked_bound(key, process, model_fn, x0, t, weight=weight).total
