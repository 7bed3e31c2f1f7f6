"""optax optimizers built from the `optimizer` section of a config."""

from __future__ import annotations

import optax


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
) -> optax.GradientTransformation:
    """AdamW (Loshchilov & Hutter 2019) with warm-up, decay and global-norm clipping."""
    parts = [optax.clip_by_global_norm(grad_clip)] if grad_clip > 0 else []
    parts.append(
        optax.adamw(
            learning_rate_schedule(lr, warmup_steps, num_steps, decay),
            b1=b1,
            b2=b2,
            weight_decay=weight_decay,
        )
    )
    return optax.chain(*parts)
