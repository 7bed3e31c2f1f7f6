"""CTMC Euler sampling: first-order steps with the reverse rates at the start of each step."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from diffax.discrete.samplers.jumps import jump_parts, rate_step
from diffax.discrete.samplers.registry import register_sampler
from diffax.discrete.samplers.step import Step, init_model


def euler_logits(scale: jax.Array, log_rel: jax.Array, x: jax.Array, h) -> jax.Array:
    """One CTMC Euler step: P(y) = h R(y) for y != x, P(x) = 1 - h sum R, clipped to [0, 1].

    When h sum R > 1 the token jumps surely, to y with probability R(y) / sum R.

    Args:
      scale: `[B]`; log_rel: `[B, L, S]` (rates = scale * exp(log_rel)); x: `[B, L]`; h: step.

    Returns:
      `[B, L, S]` logits of the next state.

    Reference: Campbell et al. 2022; Lou et al. 2024 (SEDD), the Euler sampler.
    """
    lam, log_dest = jump_parts(scale, log_rel, h)
    p_jump = jnp.minimum(lam, 1.0)
    stay = jax.nn.one_hot(x, log_rel.shape[-1], dtype=jnp.bool_)
    return jnp.where(stay, jnp.log1p(-p_jump), log_dest + jnp.log(p_jump))


@register_sampler("euler")
def euler() -> Step:
    """CTMC Euler sampler: first-order steps with the reverse rates at the start of each step.

    For any process; one network evaluation per step.

    Returns:
      a `Step` for `diffax.discrete.sample` / `run_steps`.

    Reference: Campbell et al. 2022; Lou et al. 2024 (SEDD), Euler sampling.
    """
    return Step(
        init=init_model,
        step=rate_step(euler_logits),
        name="euler",
        reference="Campbell et al. 2022; Lou et al. 2024 (SEDD), Euler sampling",
    )
