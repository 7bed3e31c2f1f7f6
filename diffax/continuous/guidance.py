"""Classifier-free guidance as a model wrapper.

`out = out_uncond + w (out_cond - out_uncond)`; w = 1 is the conditional model, w = 0 the
unconditional one. Every parameterization is an affine function of the model output with
coefficients that depend only on (x_t, t) (see `parameterizations`), and the guidance combination is
an affine combination (weights summing to 1), so combining in eps, x0, v, score or velocity space
gives the same guided model; `combine_in` only chooses where the arithmetic happens (e.g. to apply
a clip in x0 space afterwards). Ho & Salimans 2022, Classifier-Free Diffusion Guidance.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from diffax.continuous.parameterizations import PREDICTIONS, ModelFn, convert
from diffax.continuous.processes import GaussianProcess
from diffax.core import check_choice, check_shape
from diffax.core.arrays import float_dtype

CondModelFn = Callable[[jax.Array, jax.Array, Any], jax.Array]


def classifier_free_guidance(
    model_fn: CondModelFn,
    cond: Any,
    null_cond: Any,
    guidance_scale: float,
    *,
    process: GaussianProcess | None = None,
    prediction: str = "eps",
    combine_in: str | None = None,
) -> ModelFn:
    """Wraps a conditional model into a guided `model_fn(x: [B, ...], t: [B]) -> [B, ...]`.

    The conditional and unconditional predictions come from ONE call of `model_fn` on the batch
    doubled along axis 0 (`cond` and `null_cond` are pytrees with leading axis B, concatenated),
    so a guided evaluation counts as one network evaluation of batch 2B.

    Args:
      model_fn: `(x: [2B, ...], t: [2B], c) -> [2B, ...]` predicting `prediction`.
      cond: conditioning pytree, leading axis B.
      null_cond: the "no condition" pytree (e.g. a null label), same structure and shapes.
      guidance_scale: w (1 = conditional, > 1 = stronger guidance).
      process: needed only when `combine_in` differs from `prediction`.
      prediction: the model's parameterization (also that of the guided output).
      combine_in: parameterization in which to combine (default: `prediction`).
    """
    check_choice(prediction, PREDICTIONS, "prediction")
    combine_in = prediction if combine_in is None else combine_in
    check_choice(combine_in, PREDICTIONS, "combine_in")
    if combine_in != prediction and process is None:
        raise ValueError("combine_in != prediction needs the process to convert predictions")
    both = jax.tree_util.tree_map(lambda c, n: jnp.concatenate([c, n], axis=0), cond, null_cond)

    def guided(x: jax.Array, t: jax.Array) -> jax.Array:
        batch = x.shape[0]
        t = jnp.broadcast_to(jnp.asarray(t, float_dtype()), (batch,))
        out = model_fn(jnp.concatenate([x, x]), jnp.concatenate([t, t]), both)
        check_shape(out, (2 * batch,) + x.shape[1:], "model_fn output")
        out_c, out_u = out[:batch], out[batch:]
        if combine_in != prediction:
            out_c, out_u = (
                convert(process, o, x, t, source=prediction, target=combine_in)
                for o in (out_c, out_u)
            )
        combined = out_u + guidance_scale * (out_c - out_u)
        if combine_in != prediction:
            combined = convert(process, combined, x, t, source=combine_in, target=prediction)
        return combined

    return guided
