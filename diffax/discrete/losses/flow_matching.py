"""Discrete flow matching: plain cross-entropy of the denoiser along the probability path."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from diffax.core import batch_time
from diffax.core.validation import concrete_or_none
from diffax.discrete.losses.times import stratified_times
from diffax.discrete.parameterizations import (
    ModelFn,
    as_denoiser,
    check_prediction,
    check_sequences,
    evaluate,
)
from diffax.discrete.processes import Process


def _check_score_times(process: Process, t, prediction: str) -> None:
    """A concrete score says nothing about x_0 where alpha(t) = 0: refuse such concrete t.

    Absorbing processes (`mask_id` not None) read their denoiser as softmax(log r), which holds
    for any alpha(t) > 0 and is refused by `check_prediction` when alpha(1) = 0.
    """
    if prediction != "concrete_score" or process.mask_id is not None or t is None:
        return
    alpha = concrete_or_none(process.schedule.alpha, t)
    if alpha is not None and np.any(alpha == 0):
        raise ValueError(
            "t must lie in [0, 1) for flow_matching_ce with prediction='concrete_score' on "
            f"{type(process).__name__} with {type(process.schedule).__name__}: alpha(t) = 0 at "
            "the given t, where the concrete score carries no information about x_0 (the "
            "denoiser it implies is undefined)"
        )


def flow_matching_ce(
    key: jax.Array,
    process: Process,
    model_fn: ModelFn,
    x0: jax.Array,
    t: jax.Array | None = None,
    *,
    prediction: str = "denoiser",
) -> jax.Array:
    """Discrete flow-matching loss: sum_l -log p_theta(x_0^l | x_t), t ~ U(0, 1], x_t ~ p_t(.|x_0).

    The path is the process's marginal (a mixture path kappa_t = alpha(t) for `Masked`/`Uniform`).
    Unweighted, so it is a per-example training loss in nats, not a likelihood bound; all
    positions count (for an absorbing process, unmasked ones are trivial to predict).

    Args:
      key: PRNG key. process: any process. model_fn: denoiser `(x_t, t) -> logits [B, L, V]`.
      x0: `[B, L]` int32 clean tokens. t: optional `[B]` times (default stratified).
      prediction: "denoiser", or "concrete_score" (converted to a denoiser; needs alpha(t) > 0
        for processes without a mask state: concrete t with alpha(t) = 0 are refused).

    Returns:
      `[B]` float32 cross-entropy per sequence in nats.

    Reference: Gat et al. 2024, Discrete Flow Matching; Campbell et al. 2024, Generative Flows
    on Discrete State-Spaces.
    """
    check_prediction(prediction)
    check_sequences(x0, process.vocab_size, "x0")
    _check_score_times(process, t, prediction)
    key_t, key_x = jax.random.split(key)
    t = stratified_times(key_t, x0.shape[0]) if t is None else batch_time(t, x0.shape[0])
    xt = process.sample_marginal(key_x, x0, t)
    logp = as_denoiser(process, evaluate(model_fn, process, xt, t), xt, t, prediction)
    nll = -jnp.take_along_axis(logp, x0[..., None], axis=-1)[..., 0]
    return jnp.sum(nll.reshape(x0.shape[0], -1), axis=-1)
