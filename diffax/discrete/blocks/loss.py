"""The block-diffusion (BD3-LM) negative ELBO: masked diffusion inside blocks, AR across blocks.

With blocks of K tokens, -log p(x) = sum_b -log p(x^b | x^{<b}) <= sum_b NELBO_b, where NELBO_b
is the masked-diffusion bound of block b given the clean blocks before it, each block with its
own time t_b. All blocks are trained in one network pass over the two-stream input
`[x_t ; x_0]` (length 2L) with the block-diffusion attention mask: a noisy token of block b sees
the noisy tokens of block b and the clean tokens of blocks < b (`MaskSpec("block_diffusion")` in
`diffax.nn.attention`; `per_block_two_stream` is the same model as L / K separate calls).

Block size L is `masked_elbo` (one block, the same random draws); block size 1 is the
autoregressive NLL in expectation (each token is masked with probability 1 - alpha(t) and weighted
by -alpha'(t) / (1 - alpha(t))).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from diffax.core import LinearHead, check_choice, check_positive_int
from diffax.discrete.losses.elbo_terms import ELBOTerms
from diffax.discrete.losses.endpoints import prior_kl
from diffax.discrete.losses.masked import _weighted_terms
from diffax.discrete.losses.times import stratified_times
from diffax.discrete.parameterizations import check_sequences, denoiser_nll
from diffax.discrete.processes import Process


def check_block_size(block_size: int, length: int, argument: str = "block_size") -> int:
    """`block_size` as an int >= 1 dividing `length`; a `ValueError` naming `argument` otherwise."""
    block_size = check_positive_int(block_size, argument)
    if length % block_size:
        raise ValueError(
            f"{argument}={block_size} must divide the sequence length {length} (allowed values: "
            f"the divisors of {length})"
        )
    return block_size


def _check_range(t_min: float, t_max: float) -> None:
    if not 0.0 <= float(t_min) < float(t_max) <= 1.0:
        raise ValueError(f"need 0 <= t_min < t_max <= 1, got t_min={t_min}, t_max={t_max}")


def _noisy_rows(output, length: int):
    """The first L rows (the noisy stream) of a `[B, L or 2L, ...]` output or `LinearHead`."""
    if isinstance(output, LinearHead):
        if output.hidden.shape[1] not in (length, 2 * length):
            raise ValueError(
                f"two-stream model_fn returned a LinearHead with hidden {output.hidden.shape}; "
                f"expected [B, {length} or {2 * length}, D]"
            )
        return output.replace(hidden=output.hidden[:, :length])
    if output.ndim != 3 or output.shape[1] not in (length, 2 * length):
        raise ValueError(
            f"two-stream model_fn returned shape {output.shape}; expected [B, {length} or "
            f"{2 * length}, V] (the noisy rows first)"
        )
    return output[:, :length]


def block_times(
    key: jax.Array, batch: int, num_blocks: int, t_min: float = 0.0, t_max: float = 1.0
) -> jax.Array:
    """Per-block times `[B, num_blocks]`: stratified over the B * num_blocks blocks of the batch.

    With one block this is `stratified_times(key, B)`, the times of `masked_elbo`.
    """
    t = stratified_times(key, batch * num_blocks, t_min=t_min, t_max=t_max)
    return t.reshape(batch, num_blocks)


def block_masked_bound_with_log_z(
    key: jax.Array,
    process: Process,
    model_fn,
    x0: jax.Array,
    t: jax.Array | None = None,
    *,
    block_size: int,
    t_min: float = 0.0,
    t_max: float = 1.0,
    weight: jax.Array | None = None,
) -> tuple[ELBOTerms, jax.Array, jax.Array]:
    """The terms of `block_masked_elbo`, the log-partition of the logits and the masked positions.

    Arguments as `block_masked_elbo`.

    Returns:
      `(terms, log_z, masked)`: `ELBOTerms` (each `[B]`; the diffusion term is the sum over
      blocks), `[B, L]` float32 logsumexp of the denoiser logits (for a z-loss) and the `[B, L]`
      bool positions where x_t is masked (where the diffusion term and a z-loss live).
    """
    if process.mask_id is None:
        raise TypeError(
            f"block_masked_elbo needs an absorbing process (mask_id not None, e.g. Masked), got "
            f"{type(process).__name__}"
        )
    check_sequences(x0, process.vocab_size, "x0")
    batch, length = x0.shape
    block_size = check_block_size(block_size, length)
    _check_range(t_min, t_max)
    num_blocks = length // block_size
    key_t, key_x, key_0 = jax.random.split(key, 3)
    if t is None:
        t = block_times(key_t, batch, num_blocks, t_min, t_max)
    else:
        t = jnp.asarray(t, jnp.float32)
        t = t[:, None] if t.ndim == 1 and num_blocks == 1 else t
        if t.shape != (batch, num_blocks):
            raise ValueError(
                f"t must have shape [B, L // block_size] = {(batch, num_blocks)}, got {t.shape}"
            )
    # Each block is an example of its own for the process: one time, K tokens.
    rows = x0.reshape(batch * num_blocks, block_size)
    t_rows = t.reshape(-1)
    xt = process.sample_marginal(key_x, rows, t_rows).reshape(batch, length)
    output = _noisy_rows(model_fn(jnp.concatenate([xt, x0], axis=1), t), length)
    nll, log_z = denoiser_nll(process, output, x0)
    terms = _weighted_terms(
        process,
        nll.reshape(rows.shape),
        rows,
        xt.reshape(rows.shape),
        t_rows,
    )
    diffusion = jnp.sum(terms.reshape(batch, -1), axis=-1)
    if weight is not None:
        diffusion = diffusion * weight
    elbo_terms = ELBOTerms(
        prior=prior_kl(process, x0),
        reconstruction=_block_reconstruction(key_0, process, model_fn, x0, num_blocks),
        diffusion=diffusion,
    )
    return elbo_terms, log_z, xt == process.mask_id


def _block_reconstruction(key, process, model_fn, x0, num_blocks):
    """E[-log p(x_0 | x_{t=0})] with every block at t = 0 (zero when alpha(0) = 1)."""
    batch, length = x0.shape
    if process.schedule.alpha_at(0.0) == 1.0:
        return jnp.zeros((batch,), jnp.float32)
    t = jnp.zeros((batch, num_blocks), jnp.float32)
    xt = process.sample_marginal(key, x0, jnp.zeros((batch,), jnp.float32))
    output = _noisy_rows(model_fn(jnp.concatenate([xt, x0], axis=1), t), length)
    nll = denoiser_nll(process, output, x0)[0]
    return jnp.sum(jnp.where(xt == process.mask_id, nll, 0.0), axis=-1)


def block_masked_elbo(
    key: jax.Array,
    process: Process,
    model_fn,
    x0: jax.Array,
    t: jax.Array | None = None,
    *,
    block_size: int,
    t_min: float = 0.0,
    t_max: float = 1.0,
    prediction: str = "denoiser",
    weight: jax.Array | None = None,
) -> jax.Array:
    """Single-sample Monte-Carlo estimate of the block-diffusion negative ELBO per sequence.

    -ELBO(x_0) = sum_b int_0^1 -alpha'(t) / (1 - alpha(t)) E[sum_{l in block b: x_t^l = mask}
    -log p_theta(x_0^l | x_t^b, x_0^{<b})] dt (plus the prior and reconstruction terms when
    alpha(1) > 0 or alpha(0) < 1). Each block draws its own time (stratified over all blocks of
    the batch) and its own mask; the network sees all blocks at once through the two-stream
    input. With the exact block-conditional denoiser the bound is tight.

    Args:
      key: PRNG key.
      process: an absorbing process (`mask_id` not None), e.g. `Masked`.
      model_fn: the two-stream network `(tokens [B, 2L] int32 = concatenate([x_t, x_0],
        axis=1), t [B, L // block_size] float32 per-block times) -> logits [B, L, V] or
        [B, 2L, V]` (the first L rows, the noisy stream, are used) or a `LinearHead` whose hidden
        is `[B, L, D]` or `[B, 2L, D]` (vocab-chunked cross-entropy). A transformer supplies it
        with `diffax.nn.block_models.two_stream_fn`; `per_block_two_stream` builds it from any
        block-causal model.
      x0: `[B, L]` int32 clean tokens in [0, V).
      t: optional `[B, L // block_size]` per-block times (`[B]` when there is one block);
        default stratified times in (t_min, t_max].
      block_size: K, dividing L. K = L is `masked_elbo` (same key, same draws).
      t_min, t_max: the time range of the default times. (0, 1) gives the NELBO; a narrower
        range (BD3-LM's clipped "data-driven" schedule, e.g. 0.3-0.8) is a lower-variance
        training objective, not a bound.
      prediction: must be "denoiser".
      weight: optional `[B]` factor on the diffusion term.

    Returns:
      `[B]` float32 negative ELBO in nats per sequence.

    Reference: Arriola et al. 2025, Block Diffusion: Interpolating Between Autoregressive and
    Diffusion Language Models (BD3-LM), eq. 5-7 and sec. 5 (clipped schedules).
    """
    check_choice(prediction, ("denoiser",), "prediction")
    terms = block_masked_bound_with_log_z(
        key,
        process,
        model_fn,
        x0,
        t,
        block_size=block_size,
        t_min=t_min,
        t_max=t_max,
        weight=weight,
    )[0]
    return terms.total
