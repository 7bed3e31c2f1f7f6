"""Guidance for discrete diffusion models: classifier-free and classifier (rate-tilting) guidance.

Both wrap a network into a plain `model_fn(tokens [B, L] int32, t [B]) -> [B, L, V]` that any
sampler takes.

* `classifier_free_guidance`: the conditional and unconditional outputs of one network (one call
  on the doubled batch) mixed in log space with the weight convention of
  `diffax.continuous.classifier_free_guidance` (w = 1 the conditional model, w = 0 the
  unconditional one). Ho & Salimans 2022; Nisonoff et al. 2024 (discrete guidance).
* `classifier_guidance`: the reverse rates tilted per token by a noisy classifier,
  r_guided(x -> x^{l<-v}) = r(x -> x^{l<-v}) (h_t(x^{l<-v}) / h_t(x))^gamma, with h_t evaluated
  exactly on all L * V one-token neighbours (or to first order from its gradient). Nisonoff et al.
  2024, Unlocking Guidance for Discrete State-Space Diffusion and Flow Models; Schiff et al. 2024
  (UDLM), Simple Guidance Mechanisms for Discrete Diffusion Models.

Why the tilt is exact: for a tilted data law q(x_0) ~ p(x_0) g(x_0) the forward marginals are
q_t(x) ~ p_t(x) h_t(x) with h_t(x) = E[g(x_0) | x_t = x], so every concrete score (and every
reverse rate) of q is that of p times h_t(y) / h_t(x). With g = p(y | x_0)^gamma, sampling the
guided model draws from p(x) p(y | x)^gamma / Z exactly when log_likelihood_fn * gamma is
log E[p(y | x_0)^gamma | x_t]; a noisy classifier log p_t(y | x_t) = log E[p(y | x_0) | x_t]
scaled by gamma != 1 is the usual approximation (E[g^gamma] != E[g]^gamma).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from diffax.core import batch_time, check_choice, check_shape, is_concrete
from diffax.discrete.parameterizations import (
    PREDICTIONS,
    ModelFn,
    as_denoiser,
    check_prediction,
    evaluate,
)
from diffax.discrete.processes import Process

CondModelFn = Callable[[jax.Array, jax.Array, Any], jax.Array]
"""`model_fn(tokens [2B, L] int32, t [2B], cond) -> [2B, L, V]`, cond a pytree with axis 2B."""

LogLikelihoodFn = Callable[[jax.Array, jax.Array], jax.Array]
"""`log_likelihood_fn(x_t [N, L] int32, t [N]) -> [N]`: the noisy classifier log p_t(y | x_t)."""

OUTPUTS = ("concrete_score", "denoiser")


def _check_scale(guidance_scale: Any, argument: str) -> None:
    """A real scalar, finite when concrete (a traced scale is allowed)."""
    shape = jnp.shape(guidance_scale)
    if shape != ():
        raise ValueError(f"{argument} must be a scalar, got shape {shape}")
    if is_concrete(guidance_scale) and not math.isfinite(float(guidance_scale)):
        raise ValueError(f"{argument} must be a finite number, got {guidance_scale!r}")


def mix_log(log_c: jax.Array, log_u: jax.Array, guidance_scale) -> jax.Array:
    """(1 - w) log_u + w log_c with -inf (an excluded class) handled without NaN.

    A zero weight drops its term exactly (w = 1 returns `log_c`, w = 0 returns `log_u`); a
    class at -inf under a model whose weight is non-zero stays excluded (-inf), also when
    w > 1 would otherwise turn an unconditional zero into +inf.

    Args:
      log_c: `[..., V]` conditional log values. log_u: same shape, unconditional.
      guidance_scale: w, a scalar.

    Returns:
      `[..., V]` float32 mixed values.
    """
    w = jnp.asarray(guidance_scale, jnp.float32)
    c_term = jnp.where(w == 0.0, 0.0, w * jnp.where(jnp.isfinite(log_c), log_c, 0.0))
    u_term = jnp.where(w == 1.0, 0.0, (1.0 - w) * jnp.where(jnp.isfinite(log_u), log_u, 0.0))
    excluded = ((log_c == -jnp.inf) & (w != 0.0)) | ((log_u == -jnp.inf) & (w != 1.0))
    return jnp.where(excluded, -jnp.inf, c_term + u_term)


def _convert(process: Process, out, x, t, source: str, target: str) -> jax.Array:
    """A `[B, L, V]` output from parameterization `source` to `target` (log-probabilities for
    "denoiser")."""
    if source == target:
        return out
    if target == "denoiser":
        return as_denoiser(process, out, x, t, source)
    return process.denoiser_to_log_ratios(out, x, t)


def classifier_free_guidance(
    model_fn: CondModelFn,
    cond: Any,
    null_cond: Any,
    guidance_scale: float,
    *,
    process: Process | None = None,
    prediction: str = "denoiser",
    combine_in: str | None = None,
) -> ModelFn:
    """Wraps a conditional discrete model into a guided `model_fn(x [B, L], t [B]) -> [B, L, V]`.

    The conditional and unconditional outputs come from ONE call of `model_fn` on the batch
    doubled along axis 0 (`cond` and `null_cond` concatenated), so a guided evaluation is one
    network evaluation of batch 2B (one NFE to the samplers). The outputs are mixed in log space
    with the weights of `diffax.continuous.classifier_free_guidance`:

    * "denoiser": (1 - w) log p_u(x_0 | x_t) + w log p_c(x_0 | x_t) of the log-softmaxed
      outputs, p_c^w p_u^(1 - w) up to a normaliser that the samplers' softmax supplies.
    * "concrete_score": (1 - w) log r_u + w log r_c of the log ratios, i.e. the guided reverse
      rates r_c^w r_u^(1 - w) (SEDD / uniform-process style; Nisonoff et al. 2024, eq. 9).

    w = 1 is exactly the conditional model, w = 0 exactly the unconditional one; w > 1
    sharpens the condition. For `Masked` both choices give the same guided denoiser (the
    score is the denoiser times a class-independent factor); for `Uniform` they differ, and
    `combine_in` picks one. A class at -inf under a model with non-zero weight stays excluded.

    Args:
      model_fn: `(tokens [2B, L] int32, t [2B], cond) -> [2B, L, V]` in the `prediction` form.
      cond: the condition, a pytree with leading axis B (e.g. labels `[B]`, a prefix `[B, P]`).
      null_cond: the "no condition" pytree (e.g. a null label, a masked prefix), same shapes.
      guidance_scale: w (1 = conditional, 0 = unconditional, > 1 = stronger guidance).
      process: the forward process; needed only when `combine_in` differs from `prediction`
        (and then its `check_prediction` runs).
      prediction: what `model_fn` outputs, "denoiser" or "concrete_score" (also the form of
        the guided output).
      combine_in: where to mix, "denoiser" or "concrete_score" (default: `prediction`).

    Returns:
      the guided `model_fn(tokens [B, L] int32, t scalar or [B]) -> [B, L, V]` float32.

    Reference: Ho & Salimans 2022, Classifier-Free Diffusion Guidance; Nisonoff et al. 2024,
    Unlocking Guidance for Discrete State-Space Diffusion and Flow Models.
    """
    check_prediction(prediction)
    combine_in = prediction if combine_in is None else combine_in
    check_choice(combine_in, PREDICTIONS, "combine_in")
    _check_scale(guidance_scale, "guidance_scale")
    if combine_in != prediction and process is None:
        raise ValueError(
            f"combine_in={combine_in!r} differs from prediction={prediction!r}: pass process= to "
            "convert the outputs"
        )
    if process is not None:
        process.check_prediction(prediction)
    if jax.tree_util.tree_structure(cond) != jax.tree_util.tree_structure(null_cond):
        raise ValueError("null_cond must have the same pytree structure as cond")
    both = jax.tree_util.tree_map(lambda c, n: jnp.concatenate([c, n], axis=0), cond, null_cond)

    def guided(x: jax.Array, t: jax.Array) -> jax.Array:
        batch = x.shape[0]
        t = batch_time(t, batch)
        out = model_fn(jnp.concatenate([x, x]), jnp.concatenate([t, t]), both)
        vocab = out.shape[-1] if process is None else process.vocab_size
        check_shape(out, (2 * batch,) + tuple(x.shape[1:]) + (vocab,), "model_fn output")
        out = jnp.asarray(out, jnp.float32)
        if prediction == "denoiser":
            out = jax.nn.log_softmax(out, axis=-1)
        out_c, out_u = out[:batch], out[batch:]
        if combine_in != prediction:
            out_c, out_u = (
                _convert(process, o, x, t, prediction, combine_in) for o in (out_c, out_u)
            )
        mixed = mix_log(out_c, out_u, guidance_scale)
        if combine_in != prediction:
            mixed = _convert(process, mixed, x, t, combine_in, prediction)
        return mixed

    return guided


def one_token_neighbours(x: jax.Array, vocab_size: int) -> jax.Array:
    """Every sequence one token away from x: `[B, L, V, L]`, entry [b, l, v] = x_b with x^l <- v.

    Args:
      x: `[B, L]` int32 tokens. vocab_size: V, the clean ids substituted.

    Returns:
      `[B, L, V, L]` int32 (the entry with v = x^l is x itself).
    """
    length = x.shape[1]
    at_l = jnp.eye(length, dtype=jnp.bool_)[None, :, None, :]
    values = jnp.arange(vocab_size, dtype=jnp.int32)[None, None, :, None]
    return jnp.where(at_l, values, x[:, None, None, :]).astype(jnp.int32)


def neighbour_log_ratios(
    log_likelihood_fn: LogLikelihoodFn, x: jax.Array, t: jax.Array, vocab_size: int
) -> jax.Array:
    """log h_t(x^{l<-v}) - log h_t(x) for every position l and clean id v, evaluated exactly.

    One call of `log_likelihood_fn` on the B (L V + 1) sequences (x and its neighbours).

    Args:
      log_likelihood_fn: `(x_t [N, L] int32, t [N]) -> [N]` log h_t.
      x: `[B, L]` int32. t: `[B]`. vocab_size: V.

    Returns:
      `[B, L, V]` float32.
    """
    batch, length = x.shape
    nbrs = one_token_neighbours(x, vocab_size).reshape(batch * length * vocab_size, length)
    tokens = jnp.concatenate([x, nbrs], axis=0)
    times = jnp.concatenate([t, jnp.repeat(t, length * vocab_size)])
    log_h = jnp.asarray(log_likelihood_fn(tokens, times), jnp.float32)
    check_shape(log_h, (tokens.shape[0],), "log_likelihood_fn output")
    log_h_x, log_h_nbrs = log_h[:batch], log_h[batch:].reshape(batch, length, vocab_size)
    return log_h_nbrs - log_h_x[:, None, None]


def gradient_log_ratios(
    log_likelihood_fn: LogLikelihoodFn, x: jax.Array, t: jax.Array, process: Process
) -> jax.Array:
    """First-order log h_t(x^{l<-v}) - log h_t(x) ~ g[l, v] - g[l, x^l], g = d log h / d onehot.

    `log_likelihood_fn` is called once, on the float32 one-hot `[B, L, S]` of x (S =
    `process.num_states`), and differentiated (one backward pass); exact when log h is linear
    in the one-hot input. Returns `[B, L, V]` float32.

    Reference: Nisonoff et al. 2024, sec. 4.2 (Taylor-approximated guidance); Vignac et al.
    2023 (DiGress).
    """
    one_hot = jax.nn.one_hot(x, process.num_states, dtype=jnp.float32)

    def total(oh):
        log_h = jnp.asarray(log_likelihood_fn(oh, t), jnp.float32)
        check_shape(log_h, (x.shape[0],), "log_likelihood_fn output")
        return jnp.sum(log_h)

    grad = jax.grad(total)(one_hot)
    at_x = jnp.take_along_axis(grad, x[..., None], axis=-1)
    return grad[..., : process.vocab_size] - at_x


def classifier_guidance(
    model_fn: ModelFn,
    process: Process,
    log_likelihood_fn: LogLikelihoodFn,
    guidance_scale: float = 1.0,
    *,
    prediction: str = "denoiser",
    first_order: bool = False,
    output: str = "concrete_score",
) -> ModelFn:
    """Tilts the reverse rates of a model by a noisy classifier (discrete classifier guidance).

    log r_guided(x -> x^{l<-v}) = log r(x -> x^{l<-v}) + gamma (log h_t(x^{l<-v}) - log h_t(x))
    per position l and clean id v, with h_t = exp(log_likelihood_fn) evaluated exactly on all
    L * V one-token neighbours of x in one batched call (B L V + B sequences: for small L V),
    or, with `first_order=True`, to first order from its gradient in the one-hot input (one
    forward and one backward pass; then `log_likelihood_fn` receives the float32 one-hot
    `[B, L, S]`, S = `process.num_states`, instead of int32 tokens).

    Exactness: with gamma log h_t = log E[p(y | x_0)^gamma | x_t] the guided model is the
    exact model of the tilted target p(x_0) p(y | x_0)^gamma / Z (see the module docstring);
    a noisy classifier log p_t(y | x_t) trained on untilted data, scaled by gamma != 1, is an
    approximation (exact only for gamma = 1).

    The guided output is a concrete score (log ratios): sample it with
    `prediction="concrete_score"` (euler, tau_leaping, analytic, ...; a `Masked` process needs
    alpha(1) > 0 there, e.g. `LogLinearSchedule`). For an absorbing process `output="denoiser"`
    returns the equivalent guided denoiser logits log p(x_0^l = v | x_t) + gamma log h_t(x^{l<-v})
    (exact: unmasking l to v fixes x_0^l = v), usable with every sampler of the process
    (ancestral, first_hitting, ...). For an absorbing process only masked positions are tilted
    (unmasked ones have no reverse rates).

    Args:
      model_fn: `(tokens [B, L] int32, t [B]) -> [B, L, V]` in the `prediction` form.
      process: the forward process (`Masked`, `Uniform`, `General`, ...).
      log_likelihood_fn: `(x_t [N, L] int32, t [N]) -> [N]` float, log h_t(x_t) (the noisy
        classifier log p_t(y | x_t) for the wanted y).
      guidance_scale: gamma (1 = the posterior p(x | y) under an exact noisy classifier).
      prediction: what `model_fn` outputs, "denoiser" or "concrete_score".
      first_order: use the gradient (Taylor) approximation of the log ratios of h.
      output: "concrete_score" (default) or "denoiser" (absorbing processes only).

    Returns:
      the guided `model_fn(tokens [B, L] int32, t scalar or [B]) -> [B, L, V]` float32.

    Reference: Nisonoff et al. 2024, Unlocking Guidance for Discrete State-Space Diffusion and
    Flow Models; Schiff et al. 2024 (UDLM), Simple Guidance Mechanisms for Discrete Diffusion.
    """
    check_prediction(prediction)
    process.check_prediction(prediction)
    check_choice(output, OUTPUTS, "output")
    _check_scale(guidance_scale, "guidance_scale")
    if not isinstance(first_order, bool):
        raise TypeError(f"first_order must be a bool, got {type(first_order).__name__}")
    absorbing = process.mask_id is not None
    if output == "denoiser" and not absorbing:
        raise ValueError(
            f"output='denoiser' needs an absorbing process (mask_id not None), got "
            f"{type(process).__name__}; allowed values: 'concrete_score'"
        )
    if output == "concrete_score":
        process.check_prediction("concrete_score")
    vocab = process.vocab_size

    def guided(x: jax.Array, t: jax.Array) -> jax.Array:
        t = batch_time(t, x.shape[0])
        out = evaluate(model_fn, process, x, t)
        if output == "denoiser":
            base = as_denoiser(process, out, x, t, prediction)
        elif prediction == "concrete_score":
            base = out
        else:
            base = process.denoiser_to_log_ratios(out, x, t)
        if first_order:
            tilt = gradient_log_ratios(log_likelihood_fn, x, t, process)
        else:
            tilt = neighbour_log_ratios(log_likelihood_fn, x, t, vocab)
        tilted = base + jnp.asarray(guidance_scale, jnp.float32) * tilt
        # Where the base rate is zero (or the class excluded) the tilt cannot revive it.
        tilted = jnp.where(base == -jnp.inf, -jnp.inf, tilted)
        if absorbing:
            movable = (x == process.mask_id)[..., None]
        else:
            movable = ~jax.nn.one_hot(x, vocab, dtype=jnp.bool_)
        return jnp.where(movable, tilted, base)

    return guided
