"""The jitted, sharded train step: loss, gradients (optionally accumulated), NaN guard, EMA."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding

from diffax.training.state import ema_update, tree_all_finite

# loss_fn(params, key, batch) -> (scalar mean loss, dict of scalar metrics)
LossFn = Callable[[Any, jax.Array, Any], tuple[jax.Array, dict[str, jax.Array]]]


def init_train_state(params: Any, tx: optax.GradientTransformation, seed: int) -> dict[str, Any]:
    """A fresh train state: step 0, parameters, optimizer state, EMA copy, RNG, skip counter."""
    return {
        "step": jnp.zeros((), jnp.int32),
        "params": params,
        "opt_state": tx.init(params),
        "ema": jax.tree.map(jnp.copy, params),
        "rng": jax.random.key_data(jax.random.key(seed)),
        "skipped": jnp.zeros((), jnp.int32),
    }


def state_shardings(
    abstract_state: dict[str, Any],
    params_sharding: Any,
    tx: optax.GradientTransformation,
    replicated: NamedSharding,
) -> dict[str, Any]:
    """Shardings for every leaf of the train state: optimizer moments follow their parameters."""
    opt = optax.tree_map_params(
        tx,
        lambda _, s: s,
        abstract_state["opt_state"],
        params_sharding,
        transform_non_params=lambda _: replicated,
    )
    return {
        "step": replicated,
        "params": params_sharding,
        "opt_state": opt,
        "ema": params_sharding,
        "rng": replicated,
        "skipped": replicated,
    }


def _split_micro(batch: Any, k: int) -> Any:
    def split(x):
        if x.shape[0] % k:
            raise ValueError(f"batch of {x.shape[0]} is not divisible by train.accum_steps={k}")
        return x.reshape((k, x.shape[0] // k) + x.shape[1:])

    return jax.tree.map(split, batch)


def make_train_step(
    loss_fn: LossFn,
    tx: optax.GradientTransformation,
    *,
    ema_decay: float,
    accum_steps: int = 1,
) -> Callable[[dict, Any], tuple[dict, dict]]:
    """Builds `train_step(state, batch) -> (state, metrics)` (un-jitted; see `jit_train_step`).

    Gradient accumulation runs `accum_steps` micro-batches in a `lax.scan` and averages their
    gradients, so the update equals one step on the whole batch when the loss is a mean over
    examples. A non-finite loss, gradient or gradient norm skips the update (parameters,
    optimizer state and EMA unchanged) and increments `state["skipped"]`.
    """

    def grads_of(params, key, batch):
        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, key, batch)
        return loss, metrics, grads

    def train_step(state, batch):
        key = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])
        params = state["params"]
        if accum_steps == 1:
            loss, metrics, grads = grads_of(params, key, batch)
        else:
            micro = _split_micro(batch, accum_steps)

            def body(carry, inp):
                i, mb = inp
                loss, metrics, grads = grads_of(params, jax.random.fold_in(key, i), mb)
                return jax.tree.map(jnp.add, carry, (loss, metrics, grads)), None

            zero = jax.tree.map(
                jnp.zeros_like,
                jax.eval_shape(grads_of, params, key, jax.tree.map(lambda x: x[0], micro)),
            )
            total, _ = jax.lax.scan(body, zero, (jnp.arange(accum_steps), micro))
            loss, metrics, grads = jax.tree.map(lambda x: x / accum_steps, total)

        grad_norm = optax.global_norm(grads)
        # Finite gradients can still have an infinite norm (squares overflow float32, e.g. after
        # a huge learning rate); clipping by that norm would turn the update into 0 or NaN.
        finite = jnp.isfinite(loss) & tree_all_finite(grads) & jnp.isfinite(grad_norm)

        def apply():
            updates, new_opt = tx.update(grads, state["opt_state"], params)
            new_params = optax.apply_updates(params, updates)
            return new_params, new_opt, ema_update(state["ema"], new_params, ema_decay)

        # One cond rather than a select per leaf: XLA compiles it several times faster on CPU.
        new_params, new_opt, new_ema = jax.lax.cond(
            finite, apply, lambda: (params, state["opt_state"], state["ema"])
        )
        new_state = {
            "step": state["step"] + 1,
            "params": new_params,
            "opt_state": new_opt,
            "ema": new_ema,
            "rng": state["rng"],
            "skipped": state["skipped"] + (~finite).astype(jnp.int32),
        }
        metrics = dict(metrics, loss=loss, grad_norm=grad_norm, skipped=new_state["skipped"])
        return new_state, metrics

    return train_step


def jit_train_step(train_step, state_sharding, batch_sharding, replicated):
    """`jax.jit` of a train step with explicit shardings; the input state is donated."""
    return jax.jit(
        train_step,
        in_shardings=(state_sharding, batch_sharding),
        out_shardings=(state_sharding, replicated),
        donate_argnums=(0,),
    )
