"""ReMDM: masked diffusion sampling that may remask already revealed tokens."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from diffax.core import check_choice, check_number, is_concrete
from diffax.discrete.categorical import bernoulli_32bit, sample_categorical
from diffax.discrete.samplers.ancestral import masked_posterior_draw, reveals_by_bernoulli
from diffax.discrete.samplers.masked_only import require_absorbing
from diffax.discrete.samplers.registry import register_sampler
from diffax.discrete.samplers.step import Model, State, Step

STRATEGIES = ("cap", "rescale", "conf", "loop")


def _loop_alpha(t: jax.Array, t_on: float, t_off: float, alpha_on: float) -> jax.Array:
    """The "loop" strategy's alpha(t): linear 0 -> alpha_on on [1, t_on], held at alpha_on on
    [t_on, t_off], linear alpha_on -> 1 on [t_off, 0]."""
    t = jnp.asarray(t, jnp.float32)
    rise = (1.0 - t) * alpha_on / (1.0 - t_on)
    fall = 1.0 - t * (1.0 - alpha_on) / t_off
    return jnp.where(t > t_on, rise, jnp.where(t > t_off, alpha_on, fall))


def _confidence_weights(neg_conf: jax.Array) -> jax.Array:
    """softmax over positions of `neg_conf` `[B, L]` (-inf: weight 0); all -inf rows give 0."""
    finite = jnp.isfinite(neg_conf)
    top = jnp.max(jnp.where(finite, neg_conf, -jnp.inf), axis=-1, keepdims=True)
    w = jnp.where(finite, jnp.exp(neg_conf - jnp.where(jnp.isfinite(top), top, 0.0)), 0.0)
    total = jnp.sum(w, axis=-1, keepdims=True)
    return jnp.where(total > 0, w / jnp.where(total > 0, total, 1.0), 0.0)


@register_sampler("remdm")
def remdm(
    eta: float = 0.04,
    strategy: str = "cap",
    t_on: float = 0.55,
    t_off: float = 0.05,
    alpha_on: float = 0.9,
) -> Step:
    """ReMDM sampler with remasking probability sigma_t (absorbing processes only).

    From t to s a revealed token is remasked with probability sigma_t, and a masked token is
    revealed (as a denoiser draw) with probability (alpha_s - (1 - sigma_t) alpha_t) /
    (1 - alpha_t). Any sigma_t <= sigma_max = min(1, (1 - alpha_s) / alpha_t) keeps the marginals
    q(x_s | x_0) of the forward process; sigma_t = 0 is `ancestral`. A step draws the ancestral
    step first (with the step's key, as `ancestral` does), then reveals some of the still masked
    tokens with probability sigma alpha_t / (1 - alpha_s) (so the reveal probability is the one
    above) and remasks revealed tokens; with eta = 0 the tokens equal `ancestral`'s for the same
    key ("cap", "rescale", "conf"). For `Masked` the extra reveals join the ancestral ones in
    one class draw (`masked_posterior_draw`): the classes are independent of the reveal
    decisions, so the law is unchanged, and only revealed positions are drawn. Strategies:

    * "cap": sigma = min(eta, sigma_max); "rescale": sigma = eta * sigma_max.
    * "conf": per token, sigma^l = eta_conf^l * sigma_total, where eta_conf = softmax over
      the revealed positions of -psi^l, psi^l the denoiser probability of the token when it was
      revealed (kept in the step state; tokens given at the start, e.g. a prompt, and remasked
      tokens have weight 0): the least confident tokens are remasked first, sigma_total =
      eta * sigma_max tokens per step in expectation (eta = 1 is the reference code's
      "remdm-conf"). Masked tokens are revealed extra in proportion, so that the expected
      number of masks after the step is ancestral's (which caps sigma_total at
      n_masked (1 - alpha_s) / (1 - alpha_t)); the reference code reveals them as MDLM does,
      which leaves more masks than 1 - alpha(s). Which token is remasked depends on its value,
      so the marginal argument above does not cover "conf": with an exact denoiser its law is
      slightly tilted towards confident sequences at large eta (see the tests).
    * "loop": the step runs on its own alpha path: alpha rises linearly from 0 (t = 1) to
      `alpha_on` (t = `t_on`), ordinary MDLM steps (sigma = 0); while `t_off` < t <= `t_on`
      alpha is held at `alpha_on` and tokens are remasked with sigma = min(eta, sigma_max) and
      re-revealed at the same rate (about eta * alpha_on * L tokens a step); from `t_off` alpha
      rises linearly to 1 at t = 0, MDLM steps again. The network is called at the process
      time whose alpha is the loop's alpha. With the default uniform grid a fraction
      t_on - t_off of the steps are loop steps.

    One network evaluation per step.

    Args:
      eta: remasking strength in [0, 1] (may be traced, e.g. a sweep under `jit`).
      strategy: "cap", "rescale", "conf" or "loop" (see above).
      t_on, t_off: "loop" only, 0 < t_off < t_on < 1 (paper: 0.55, 0.05).
      alpha_on: "loop" only, alpha held during the loop, in (0, 1) (paper: 0.9).

    Returns:
      a `Step` for `diffax.discrete.sample` / `run_steps`.

    Reference: Wang et al. 2025, Remasking Discrete Diffusion Models with Inference-Time Scaling,
    sec. 4.1 (schedules: max-capped, rescaled, confidence-based; ReMDM-switch / -loop).
    """
    check_choice(strategy, STRATEGIES, "strategy")
    if is_concrete(eta) and not 0.0 <= float(eta) <= 1.0:
        raise ValueError(f"eta must lie in [0, 1], got {eta}")
    check_number(t_off, "t_off", low=0.0, high=1.0)
    check_number(t_on, "t_on", low=0.0, high=1.0)
    check_number(alpha_on, "alpha_on", low=0.0, high=1.0)
    if is_concrete(t_on) and is_concrete(t_off) and not float(t_off) < float(t_on):
        raise ValueError(f"t_off must be < t_on, got t_off={t_off}, t_on={t_on}")

    def init(model: Model, x: jax.Array, ts: jax.Array) -> State:
        require_absorbing(model.process, "remdm")
        state = model.init()
        if strategy == "conf":
            # -psi per position; -inf: not remaskable (masked, given, or remasked).
            state["neg_conf"] = jnp.full(x.shape, -jnp.inf, jnp.float32)
        return state

    def step(model: Model, key: jax.Array, x: jax.Array, state: State, t, s):
        process = model.process
        schedule = process.schedule
        if strategy == "loop":
            in_loop = (t > t_off) & (t <= t_on)
            a_t = _loop_alpha(t, t_on, t_off, alpha_on)
            a_s = _loop_alpha(s, t_on, t_off, alpha_on)
            t = jnp.clip(schedule.inverse_alpha(a_t), 0.0, 1.0)
            s = jnp.clip(schedule.inverse_alpha(a_s), 0.0, 1.0)

        def column(v):
            return jnp.broadcast_to(v, x.shape[:1])[:, None]

        a_t, one_minus_s = column(process.alpha(t)), column(schedule.one_minus_alpha(s))
        one_minus_t = column(schedule.one_minus_alpha(t))
        sigma_max = jnp.minimum(1.0, one_minus_s / a_t)
        masked = x == process.mask_id
        if strategy == "conf":
            # Remasks take from the reveal budget: masked tokens are revealed extra so that the
            # expected number of masks after the step is ancestral's, n_masked (1 - a_s) /
            # (1 - a_t); the total remasking eta * sigma_max is capped by that budget.
            budget = jnp.sum(masked, axis=-1, keepdims=True) * one_minus_s / one_minus_t
            weights = jnp.where(masked, 0.0, _confidence_weights(state["neg_conf"]))
            remaskable = jnp.sum(weights, axis=-1, keepdims=True) > 0
            total = jnp.where(remaskable, jnp.minimum(eta * sigma_max, budget), 0.0)
            sigma = weights * total
            p_extra = jnp.where(budget > 0, total / jnp.where(budget > 0, budget, 1.0), 0.0)
        else:
            if strategy == "cap":
                value = jnp.minimum(eta, sigma_max)
            elif strategy == "rescale":
                value = eta * sigma_max
            else:
                value = jnp.where(in_loop, jnp.minimum(eta, sigma_max), 0.0)
            sigma = value
            # Extra reveals of still masked tokens: the reveal probability becomes
            # r_0 + (1 - r_0) p_extra = (a_s - (1 - sigma) a_t) / (1 - a_t).
            p_extra = jnp.where(
                one_minus_s > 0, sigma * a_t / jnp.where(one_minus_s > 0, one_minus_s, 1.0), 1.0
            )

        # The reveal-then-class draw and "conf"'s softmax are invariant to a constant per row.
        by_bernoulli = reveals_by_bernoulli(process)
        logits, state = model.denoiser_logits(state, x, t, normalize=not by_bernoulli)
        k_x0, k_extra, k_remask = (jax.random.fold_in(key, i) for i in (1, 2, 3))
        extra = bernoulli_32bit(k_extra, p_extra, x.shape)
        if by_bernoulli:
            # One class draw serves both reveals: it is independent of the reveal decisions.
            x_s = masked_posterior_draw(process, key, x, s, t, logits, extra=masked & extra)
        else:
            x_s = sample_categorical(key, process.posterior_logits(x, s, t, logits))
            x0 = sample_categorical(k_x0, logits)
            x_s = jnp.where(masked & extra & (x_s == process.mask_id), x0, x_s)
        remask = ~masked & bernoulli_32bit(k_remask, sigma, x.shape)
        x_s = jnp.where(remask, process.mask_id, x_s).astype(jnp.int32)
        if strategy == "conf":
            psi = jnp.take_along_axis(
                jax.nn.softmax(logits, axis=-1),
                jnp.clip(x_s, 0, process.vocab_size - 1)[..., None],
                -1,
            )
            revealed = masked & (x_s != process.mask_id)
            neg_conf = jnp.where(revealed, -psi[..., 0], state["neg_conf"])
            state = {**state, "neg_conf": jnp.where(remask, -jnp.inf, neg_conf)}
        return x_s, state

    return Step(
        init=init,
        step=step,
        name="remdm",
        reference="Wang et al. 2025, Remasking Discrete Diffusion Models",
    )
