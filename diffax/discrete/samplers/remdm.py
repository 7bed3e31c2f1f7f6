"""ReMDM: masked diffusion sampling that may remask already revealed tokens."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from diffax.core import check_choice, is_concrete
from diffax.discrete.categorical import sample_categorical
from diffax.discrete.samplers.masked_only import require_absorbing
from diffax.discrete.samplers.registry import register_sampler
from diffax.discrete.samplers.step import Model, State, Step

STRATEGIES = ("cap", "rescale")


@register_sampler("remdm")
def remdm(eta: float = 0.04, strategy: str = "cap") -> Step:
    """ReMDM sampler with remasking probability sigma_t (absorbing processes only).

    From t to s a revealed token is remasked with probability sigma_t, and a masked token is
    revealed (as a denoiser draw) with probability (alpha_s - (1 - sigma_t) alpha_t) /
    (1 - alpha_t). Any sigma_t <= sigma_max = min(1, (1 - alpha_s) / alpha_t) keeps the marginals
    q(x_s | x_0) of the forward process; sigma_t = 0 is `ancestral`. One network evaluation per
    step.

    Args:
      eta: remasking strength in [0, 1] (may be traced, e.g. a sweep under `jit`).
      strategy: "cap": sigma = min(eta, sigma_max); "rescale": sigma = eta * sigma_max.

    Returns:
      a `Step` for `diffax.discrete.sample` / `run_steps`.

    Reference: Wang et al. 2025, Remasking Discrete Diffusion Models with Inference-Time Scaling.
    """
    check_choice(strategy, STRATEGIES, "strategy")
    if is_concrete(eta) and not 0.0 <= float(eta) <= 1.0:
        raise ValueError(f"eta must lie in [0, 1], got {eta}")

    def init(model: Model, x: jax.Array, ts: jax.Array) -> State:
        require_absorbing(model.process, "remdm")
        return model.init()

    def step(model: Model, key: jax.Array, x: jax.Array, state: State, t, s):
        process = model.process
        schedule = process.schedule
        a_t, a_s = process.alpha(t), process.alpha(s)
        sigma_max = jnp.minimum(1.0, schedule.one_minus_alpha(s) / a_t)
        sigma = jnp.minimum(eta, sigma_max) if strategy == "cap" else eta * sigma_max
        k_x0, k_u = jax.random.split(key)
        logits, state = model.denoiser_logits(state, x, t)
        x0 = sample_categorical(k_x0, logits)
        u = jax.random.uniform(k_u, x.shape)
        p_reveal = (a_s - (1.0 - sigma) * a_t) / schedule.one_minus_alpha(t)
        masked = x == process.mask_id
        revealed = jnp.where(u < p_reveal, x0, process.mask_id)
        kept = jnp.where(u < sigma, process.mask_id, x)
        return jnp.where(masked, revealed, kept).astype(jnp.int32), state

    return Step(
        init=init,
        step=step,
        name="remdm",
        reference="Wang et al. 2025, Remasking Discrete Diffusion Models",
    )
