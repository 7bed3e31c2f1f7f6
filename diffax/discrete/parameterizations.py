"""What a discrete diffusion network predicts, and conversions between the two choices.

* `"denoiser"`: logits of p(x_0^l | x_t) per position over the V clean classes, `[B, L, V]`
  (Austin et al. 2021; Sahoo et al. 2024). For `Masked` the exact denoiser does not depend on t,
  so a time-free network (`time_free`) is valid there.
* `"concrete_score"`: log ratios log p_t(x_t with x_t^l <- y) - log p_t(x_t) for every clean y,
  `[B, L, V]` (Meng et al. 2022; Lou et al. 2024, SEDD). The entry at y = x_t^l is ignored.

The per-position identity r_y = sum_x0 p(x_0^l = x0 | x_t) P(0->t)[x0, y] / P(0->t)[x0, x_t^l]
maps a denoiser to a concrete score exactly; the inverse exists wherever P(0->t) is invertible
(alpha(t) > 0), and is implemented per process in closed form (`Masked`, `Uniform`) or with the
eigendecomposition (`General`).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from diffax.core import LinearHead, batch_time, check_shape, check_tokens, chunked_cross_entropy
from diffax.core.validation import check_ndim
from diffax.discrete.processes import PREDICTIONS as PREDICTIONS
from diffax.discrete.processes import Process
from diffax.discrete.processes.base import check_prediction_name

ModelFn = Callable[[jax.Array, jax.Array], jax.Array]
"""`model_fn(tokens [B, L] int32, t [B]) -> [B, L, V]` output; the masked ELBO (a denoiser)
also accepts a `LinearHead` (hidden `[B, L, D]`), whose logits are never materialised."""


def check_prediction(prediction: str) -> None:
    """Raises `ValueError` unless `prediction` is "denoiser" or "concrete_score"."""
    check_prediction_name(prediction)


def check_sequences(x: jax.Array, num_ids: int, argument: str = "x0") -> None:
    """Checks that `x` is a `[B, L]` batch of int32 token ids in [0, num_ids).

    A 1-D array is refused rather than read as B sequences of length 1 (or L of length 1).
    """
    check_ndim(x, argument, "[B, L] (a batch of token sequences)", ndim=2)
    check_tokens(x, num_ids, argument)


def evaluate(model_fn: ModelFn, process: Process, x: jax.Array, t: jax.Array) -> jax.Array:
    """Calls `model_fn(x [B, L] int32, t [B])`, checks the `[B, L, V]` output, returns float32."""
    t = batch_time(t, x.shape[0])
    out = model_fn(x, t)
    check_shape(out, tuple(x.shape) + (process.vocab_size,), "model_fn output")
    return jnp.asarray(out, jnp.float32)


def denoiser_nll(
    process: Process, output: jax.Array | LinearHead, x0: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """-log p_theta(x_0^l | x_t) and the log-partition of the denoiser logits, per position.

    Args:
      process: the forward process (its `vocab_size` is V).
      output: `[B, L, V]` denoiser logits, or a `LinearHead` with hidden `[B, L, D]` whose
        cross-entropy is computed in vocab chunks (`chunked_cross_entropy`, never `[B, L, V]`).
      x0: `[B, L]` int32 clean tokens (the targets).

    Returns:
      `(nll [B, L] float32, log_z [B, L] float32)`, log_z = logsumexp over the V logits.
    """
    vocab = process.vocab_size
    if isinstance(output, LinearHead):
        check_shape(output.hidden, tuple(x0.shape) + output.hidden.shape[-1:], "LinearHead.hidden")
        hidden = output.hidden.reshape(-1, output.hidden.shape[-1])
        nll, log_z = chunked_cross_entropy(
            hidden,
            output.kernel,
            x0.reshape(-1),
            num_classes=vocab,
            chunk_size=output.chunk_size,
            bias=output.bias,
        )
        return nll.reshape(x0.shape), log_z.reshape(x0.shape)
    check_shape(output, tuple(x0.shape) + (vocab,), "logits (model output)")
    logits = output.astype(jnp.float32)
    logp = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(logp, x0[..., None], axis=-1)[..., 0]
    return nll, jax.nn.logsumexp(logits, axis=-1)


def denoiser_to_score(process: Process, logits: jax.Array, x_t: jax.Array, t: jax.Array):
    """Concrete score (log ratios) from denoiser logits.

    Args:
      process: the forward process. logits: `[B, L, V]` denoiser logits.
      x_t: `[B, L]` int32 noisy tokens. t: scalar or `[B]` times.

    Returns:
      `[B, L, V]` float32 log ratios.

    Reference: Lou et al. 2024 (SEDD); Campbell et al. 2022.
    """
    return process.denoiser_to_log_ratios(logits, x_t, batch_time(t, x_t.shape[0]))


def score_to_denoiser(process: Process, log_ratios: jax.Array, x_t: jax.Array, t: jax.Array):
    """Denoiser log-probabilities from a concrete score (needs alpha(t) > 0).

    Args:
      process: the forward process. log_ratios: `[B, L, V]`. x_t: `[B, L]`. t: scalar or `[B]`.

    Returns:
      `[B, L, V]` float32 log-probabilities of p(x_0^l | x_t).

    Reference: Lou et al. 2024 (SEDD), the denoiser/score correspondence.
    """
    return process.log_ratios_to_denoiser(log_ratios, x_t, batch_time(t, x_t.shape[0]))


def as_denoiser(process: Process, output: jax.Array, x_t: jax.Array, t: jax.Array, prediction: str):
    """The model output as denoiser log-probabilities `[B, L, V]`, whatever `prediction` is."""
    check_prediction(prediction)
    if prediction == "denoiser":
        return jax.nn.log_softmax(output, axis=-1)
    return score_to_denoiser(process, output, x_t, t)


def reverse_rates(
    process: Process, output: jax.Array, x_t: jax.Array, t: jax.Array, prediction: str
) -> tuple[jax.Array, jax.Array]:
    """Reverse-time jump rates x_t -> y implied by a network output.

    Args:
      process: the forward process. output: `[B, L, V]` network output. x_t: `[B, L]`.
      t: scalar or `[B]`. prediction: "denoiser" or "concrete_score".

    Returns:
      `(scale [B], log_rel [B, L, S])`: rate(x_t^l -> y) = scale * exp(log_rel[..., y]).

    Reference: Campbell et al. 2022, Prop. 1; Lou et al. 2024 (SEDD), eq. 2.
    """
    check_prediction(prediction)
    t = batch_time(t, x_t.shape[0])
    if prediction == "denoiser":
        return process.reverse_rates(x_t, t, log_p0=output)
    return process.reverse_rates(x_t, t, log_r=output)


def time_free(network: Callable[[jax.Array], jax.Array]) -> ModelFn:
    """Wraps a network of the tokens alone as a `model_fn(tokens, t)` that ignores t.

    Valid for the masked process, whose exact denoiser does not depend on t; samplers may then
    reuse p(x_0 | x_t) when x_t has not changed (`cache=True`).

    Reference: Ou et al. 2024, Your Absorbing Discrete Diffusion Secretly Models the Conditional
    Distributions of Clean Data; Zheng et al. 2024.
    """

    def model_fn(tokens: jax.Array, t: jax.Array) -> jax.Array:
        del t
        return network(tokens)

    return model_fn
