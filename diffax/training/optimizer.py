"""optax optimizers built from the `optimizer` section of a config."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

MOMENT_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def learning_rate_schedule(
    lr: float, warmup_steps: int, num_steps: int, decay: str = "cosine", final_fraction: float = 0.1
) -> optax.Schedule:
    """Linear warm-up to `lr`, then "cosine" decay to `final_fraction * lr` or "constant"."""
    if decay == "constant":
        return optax.join_schedules(
            [optax.linear_schedule(0.0, lr, max(warmup_steps, 1)), optax.constant_schedule(lr)],
            [max(warmup_steps, 1)],
        )
    if decay == "cosine":
        return optax.warmup_cosine_decay_schedule(
            0.0, lr, max(warmup_steps, 1), max(num_steps, warmup_steps + 1), lr * final_fraction
        )
    raise ValueError(
        f"optimizer.decay={decay!r} is not allowed; allowed values: 'cosine', 'constant'"
    )


def moment_dtype(name: str) -> jnp.dtype:
    """The dtype named by `optimizer.moment_dtype` ("float32" or "bfloat16")."""
    if name not in MOMENT_DTYPES:
        raise ValueError(
            f"optimizer.moment_dtype={name!r} is not allowed; allowed values: "
            + ", ".join(repr(k) for k in MOMENT_DTYPES)
        )
    return MOMENT_DTYPES[name]


def scale_by_adam_stored_as(
    dtype: jnp.dtype, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8
) -> optax.GradientTransformation:
    """Adam's scaling (Kingma & Ba 2015) with both moments stored in `dtype`.

    `optax.scale_by_adam(mu_dtype=...)` stores only the first moment in a narrow dtype; this one
    stores both. Each update reads the stored moments, computes in float32
    (`m = b1 m + (1 - b1) g`, `v = b2 v + (1 - b2) g^2`), scales by the bias-corrected
    `m_hat / (sqrt(v_hat) + eps)` from those float32 values, and stores `m` and `v` rounded to
    `dtype`. The state is an `optax.ScaleByAdamState`, so the optimizer-state tree is the same
    as optax's Adam.

    Args:
      dtype: storage dtype of both moments (e.g. `jnp.bfloat16`).
      b1, b2: exponential decay rates of the first and second moments.
      eps: added to the root of the second moment.

    Returns:
      An `optax.GradientTransformation`.
    """

    def init(params):
        zeros = lambda p: jnp.zeros(jnp.shape(p), dtype)
        return optax.ScaleByAdamState(
            count=jnp.zeros([], jnp.int32),
            mu=jax.tree.map(zeros, params),
            nu=jax.tree.map(zeros, params),
        )

    def update(updates, state, params=None):
        del params
        count = optax.safe_increment(state.count)
        c1 = 1.0 - b1 ** count.astype(jnp.float32)
        c2 = 1.0 - b2 ** count.astype(jnp.float32)

        def one(g, m, v):
            g = g.astype(jnp.float32)
            m = b1 * m.astype(jnp.float32) + (1.0 - b1) * g
            v = b2 * v.astype(jnp.float32) + (1.0 - b2) * g * g
            step = (m / c1) / (jnp.sqrt(v / c2) + eps)
            return step, m.astype(dtype), v.astype(dtype)

        out = jax.tree.map(one, updates, state.mu, state.nu)
        treedef = jax.tree.structure(updates)
        steps, mu, nu = (
            jax.tree.unflatten(treedef, [leaf[i] for leaf in treedef.flatten_up_to(out)])
            for i in range(3)
        )
        return steps, optax.ScaleByAdamState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(init, update)


def adamw(
    lr: float,
    *,
    warmup_steps: int,
    num_steps: int,
    decay: str = "cosine",
    weight_decay: float = 0.0,
    b1: float = 0.9,
    b2: float = 0.999,
    grad_clip: float = 1.0,
    moments: str = "float32",
) -> optax.GradientTransformation:
    """AdamW (Loshchilov & Hutter 2019) with warm-up, decay and global-norm clipping.

    Args:
      lr: peak learning rate.
      warmup_steps: linear warm-up steps.
      num_steps: total steps (the end of the cosine decay).
      decay: "cosine" or "constant" after the warm-up.
      weight_decay: decoupled weight decay.
      b1, b2: Adam's moment decay rates.
      grad_clip: global-norm clipping threshold (0: off).
      moments: storage dtype of both Adam moments, "float32" (optax's `adamw`) or "bfloat16"
        (`scale_by_adam_stored_as`; halves the optimizer state).

    Returns:
      An `optax.GradientTransformation`; its state tree is the same for either `moments`.
    """
    dtype = moment_dtype(moments)
    schedule = learning_rate_schedule(lr, warmup_steps, num_steps, decay)
    parts = [optax.clip_by_global_norm(grad_clip)] if grad_clip > 0 else []
    if dtype == jnp.float32:
        parts.append(optax.adamw(schedule, b1=b1, b2=b2, weight_decay=weight_decay))
    else:
        parts.append(
            optax.chain(
                scale_by_adam_stored_as(dtype, b1=b1, b2=b2),
                optax.add_decayed_weights(weight_decay),
                optax.scale_by_learning_rate(schedule),
            )
        )
    return optax.chain(*parts)
