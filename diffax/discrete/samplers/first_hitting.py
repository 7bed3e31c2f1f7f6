"""The first-hitting sampler: exact simulation of the masked reverse process, one token a call."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from diffax.discrete.categorical import sample_categorical, uniform_below
from diffax.discrete.samplers.loop import denoise
from diffax.discrete.samplers.masked_only import require_absorbing
from diffax.discrete.samplers.registry import register_sampler
from diffax.discrete.samplers.step import Model, State, Step


def _masked_time(process, x: jax.Array) -> jax.Array:
    """`[B]` time whose masking level matches the fraction of masks in x."""
    frac = jnp.mean((x == process.mask_id).astype(jnp.float32), axis=-1)
    return jnp.clip(process.schedule.inverse_alpha(1.0 - frac), 0.0, 1.0)


def _init(model: Model, x: jax.Array, ts: jax.Array) -> State:
    require_absorbing(model.process, "first_hitting")
    # Start where the masking level matches the masks present (t = 1 unless infilling), so a
    # time-conditioned model sees consistent inputs.
    return {**model.init(), "t": _masked_time(model.process, x)}


def _reveal_one(model: Model, key: jax.Array, x: jax.Array, state: State, t_grid, s_grid):
    """Reveals one uniformly chosen masked token per sequence at its exact next-reveal time.

    Only the chosen position's class is drawn: the other L - 1 rows of the denoiser output are
    read by nothing but the model's non-finite check.
    """
    del t_grid, s_grid
    process, schedule = model.process, model.process.schedule
    batch, length = x.shape
    masked = x == process.mask_id
    n = jnp.sum(masked, axis=-1)
    active = n > 0
    t = state["t"]
    k_time, k_pos, k_val = jax.random.split(key, 3)

    def reveal(state):
        # The class draw is invariant to a constant per row: no log_softmax pass.
        logits, state = model.denoiser_logits(state, x, t, normalize=False)
        # The k-th masked position, k uniform on {0, ..., n - 1}.
        k = uniform_below(k_pos, n)
        pos = jnp.sum(jnp.cumsum(masked, axis=-1) <= k[:, None], axis=-1)
        pos = jnp.minimum(pos, length - 1)
        row = jnp.take_along_axis(logits, pos[:, None, None], axis=1)[:, 0]
        value = sample_categorical(k_val, row, method="inverse_cdf")
        hit = (jnp.arange(length)[None, :] == pos[:, None]) & active[:, None]
        frac = jax.random.uniform(k_time, (batch,)) ** (1.0 / jnp.maximum(n, 1).astype(jnp.float32))
        s = jnp.clip(schedule.inverse_alpha(1.0 - schedule.one_minus_alpha(t) * frac), 0.0, 1.0)
        return jnp.where(hit, value[:, None], x), {**state, "t": jnp.where(active, s, t)}

    return jax.lax.cond(jnp.any(active), reveal, lambda state: (x, state), state)


def _reveal_rest(model: Model, key: jax.Array, x: jax.Array, state: State, t_grid):
    """The last interval: the remaining masked tokens from the denoiser at the current time."""
    del t_grid
    return denoise(model, key, x, state, state["t"])


@register_sampler("first_hitting")
def first_hitting() -> Step:
    """First-hitting sampler for absorbing processes: samples the time of the next reveal exactly.

    With n masked tokens at time t, the reverse process next reveals a token at s with
    1 - alpha(s) = (1 - alpha(t)) u^(1/n), u ~ U(0, 1); the token is a uniformly chosen masked
    position and its value a draw from p_theta(x_0^l | x_t). Each sequence carries its own time,
    so the times of the grid are not used, only its length: every interval but the last reveals
    one token, the last reveals all that remain. Its default grid has L intervals (L = sequence
    length), whatever `num_steps` is, so `sample` reveals one token per network call (L calls for
    L masked tokens; none when nothing is masked), which with the exact denoiser reproduces the
    data distribution exactly (when alpha(1) = 0). A shorter explicit `ts` reveals the rest at
    once at the end. `info["nfe"]` reports the calls made.

    Returns:
      a `Step` for `diffax.discrete.sample` / `run_steps`.

    Reference: Zheng et al. 2024, Masked Diffusion Models are Secretly Time-Agnostic Masked
    Models and Exploit Inaccurate Categorical Sampling, sec. 4 (first-hitting sampler).
    """
    return Step(
        init=_init,
        step=_reveal_one,
        name="first_hitting",
        grid="per_token",
        final=_reveal_rest,
        reference="Zheng et al. 2024, sec. 4 (first-hitting sampler)",
    )
