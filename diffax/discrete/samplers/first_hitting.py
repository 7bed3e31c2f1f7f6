"""The first-hitting sampler: exact simulation of the masked reverse process, one token a call."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from diffax.discrete.categorical import sample_categorical
from diffax.discrete.parameterizations import ModelFn
from diffax.discrete.processes import Masked
from diffax.discrete.samplers.loop import make_infill
from diffax.discrete.samplers.masked_only import require_masked
from diffax.discrete.samplers.model_calls import ModelCaller, finish_tokens
from diffax.discrete.samplers.registry import register_sampler


@register_sampler("first_hitting")
def first_hitting(
    key: jax.Array,
    process: Masked,
    model_fn: ModelFn,
    shape: tuple[int, int],
    *,
    num_steps: int,
    prediction: str = "denoiser",
    temperature: float = 1.0,
    top_p: float = 1.0,
    cache: bool = False,
    fixed_tokens: jax.Array | None = None,
    fixed_mask: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, Any]]:
    """First-hitting sampler for `Masked`: samples the time of the next reveal exactly.

    With n masked tokens at time t, the reverse process next reveals a token at s with
    1 - alpha(s) = (1 - alpha(t)) u^(1/n), u ~ U(0, 1); the token is a uniformly chosen masked
    position and its value a draw from p_theta(x_0^l | x_t). With the exact denoiser this
    reproduces the data distribution exactly (when alpha(1) = 0), whatever `num_steps` is: the
    sampler always makes one network call per revealed token (L calls for L masked tokens), and
    `num_steps` is accepted only for the common signature. `info["nfe"]` reports the calls made.

    Args: as `ancestral` (`Masked` only).

    Returns:
      `(tokens [B, L] int32, {"nfe": int32})`. Positions where the model output was not finite
      (NaN or +inf) raise a `ValueError` in an eager call; under `jit` they are returned as -1
      (`INVALID_TOKEN`; check `jnp.all(tokens >= 0)`, e.g. with `jax.experimental.checkify`).

    Reference: Zheng et al. 2024, Masked Diffusion Models are Secretly Time-Agnostic Masked
    Models and Exploit Inaccurate Categorical Sampling, sec. 4 (first-hitting sampler).
    """
    require_masked(process, "first_hitting")
    del num_steps
    caller = ModelCaller(
        process, model_fn, prediction, shape, temperature=temperature, top_p=top_p, cache=cache
    )
    infill = make_infill(process, shape, fixed_tokens, fixed_mask)
    key_prior, key_loop = jax.random.split(key)
    x = infill(process.sample_prior(key_prior, shape))
    batch, length = shape
    # Start where the masking level matches the masks present (t = 1 unless infilling), so a
    # time-conditioned model sees consistent inputs.
    frac = jnp.mean((x == process.mask_id).astype(jnp.float32), axis=-1)
    t = jnp.clip(process.schedule.inverse_alpha(1.0 - frac), 0.0, 1.0)

    def body(carry, i):
        x, t, state = carry
        masked = x == process.mask_id
        n = jnp.sum(masked, axis=-1)
        active = n > 0
        k_time, k_pos, k_val = jax.random.split(jax.random.fold_in(key_loop, i), 3)

        def reveal(state):
            out, state = caller(state, x, t)
            pos = sample_categorical(k_pos, jnp.where(masked, 0.0, -jnp.inf))
            value = sample_categorical(k_val, caller.denoiser(out, x, t))
            hit = (jnp.arange(length)[None, :] == pos[:, None]) & active[:, None]
            u = jax.random.uniform(k_time, (batch,))
            frac = u ** (1.0 / jnp.maximum(n, 1).astype(jnp.float32))
            s = process.schedule.inverse_alpha(1.0 - process.schedule.one_minus_alpha(t) * frac)
            s = jnp.clip(s, 0.0, 1.0)
            return jnp.where(hit, value, x), jnp.where(active, s, t), state

        x, t, state = jax.lax.cond(jnp.any(active), reveal, lambda st: (x, t, st), state)
        return (infill(x).astype(jnp.int32), t, state), None

    (x, _, state), _ = jax.lax.scan(body, (x, t, caller.init()), jnp.arange(length))
    return finish_tokens(x, state, "first_hitting")
