"""Cross-entropy over a large vocabulary without materialising the logits.

A language-model head computes logits = hidden @ kernel + bias over V classes; at V = 50k and
B * L = 8k positions the float32 logits alone are 1.6 GB, and the plain autodiff of
`log_softmax` keeps several copies of them alive. `chunked_cross_entropy` walks the vocabulary
in chunks with an online log-sum-exp and a custom gradient that recomputes each chunk's logits
in the backward pass, so only `[N, chunk]` logits exist at any time.

`LinearHead` is what a network returns instead of logits when the loss should do this: the
hidden state and the output projection, with the logits left to be computed where (and if) the
loss needs them.

Reference: Wijmans et al. 2025, Cut Your Losses in Large-Vocabulary Language Models (the
blockwise log-sum-exp and recomputed gradient); Milakov & Gimelshein 2018, Online normalizer
calculation for softmax.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from diffax.core.pytree import pytree_dataclass, static_field
from diffax.core.validation import check_positive_int


@pytree_dataclass
class LinearHead:
    """Logits left uncomputed: logits = hidden @ kernel (+ bias), float32.

    Columns of `kernel` (entries of `bias`) at index >= the number of classes are padding (the
    vocabulary rounded up to a multiple of 128, say) and never take part in a softmax.

    Attributes:
      hidden: `[..., D]` hidden states (any float dtype; bf16 stays bf16 into the matmul).
      kernel: `[D, Vp]` output projection, Vp >= number of classes.
      bias: optional `[Vp]` bias.
      chunk_size: vocabulary chunk for `chunked_cross_entropy` (static).
    """

    hidden: jax.Array
    kernel: jax.Array
    bias: jax.Array | None = None
    chunk_size: int = static_field(default=8192)

    def replace(self, **changes) -> LinearHead:
        """A copy with `changes` applied (as `dataclasses.replace`)."""
        return dataclasses.replace(self, **changes)


def head_logits(head: LinearHead, num_classes: int) -> jax.Array:
    """The full float32 logits `[..., num_classes]` of a `LinearHead` (padding columns dropped).

    Args:
      head: the `LinearHead`.
      num_classes: number of real classes V (<= the kernel's column count).

    Returns:
      `[..., V]` float32 logits.
    """
    _check_head(head.hidden.shape[-1], head.kernel, head.bias, num_classes)
    kernel = head.kernel[:, :num_classes]
    logits = jnp.matmul(head.hidden, kernel, preferred_element_type=jnp.float32)
    if head.bias is not None:
        logits = logits + head.bias[:num_classes].astype(jnp.float32)
    return logits.astype(jnp.float32)


def chunked_cross_entropy(
    hidden: jax.Array,
    kernel: jax.Array,
    labels: jax.Array,
    *,
    num_classes: int,
    chunk_size: int = 8192,
    bias: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Per-row cross-entropy and log-partition of logits = hidden @ kernel + bias, in chunks.

    Equals `log_z = logsumexp(logits[:, :V])`, `nll = log_z - logits[n, labels[n]]` computed in
    float32, but the vocabulary is walked `chunk_size` classes at a time (online log-sum-exp)
    and the gradient (custom VJP) recomputes each chunk's logits, so memory is `O(N * chunk)`
    instead of `O(N * V)`. Gradients flow to `hidden`, `kernel` and `bias` from both outputs (a
    z-loss on `log_z` is differentiated correctly). Matmul inputs keep their dtype (bf16 stays
    bf16) with float32 accumulation.

    Args:
      hidden: `[N, D]` hidden states.
      kernel: `[D, Vp]` output projection; columns >= `num_classes` are padding and ignored.
      labels: `[N]` integer targets in [0, num_classes).
      num_classes: V, the number of real classes (1 <= V <= Vp).
      chunk_size: classes per chunk (>= 1); the last chunk is padded internally.
      bias: optional `[Vp]` bias.

    Returns:
      `(nll [N] float32, log_z [N] float32)`.

    Reference: Wijmans et al. 2025, Cut Your Losses in Large-Vocabulary Language Models.
    """
    if hidden.ndim != 2:
        raise ValueError(f"hidden has shape {tuple(hidden.shape)}; expected [N, D]")
    _check_head(hidden.shape[1], kernel, bias, num_classes)
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    if labels.shape != hidden.shape[:1]:
        raise ValueError(f"labels has shape {tuple(labels.shape)}; expected ({hidden.shape[0]},)")
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"labels must be an integer array, got dtype {labels.dtype}")
    chunk = min(chunk_size, num_classes)
    return _chunked_ce(num_classes, chunk, hidden, kernel, bias, labels.astype(jnp.int32))


def _check_head(dim: int, kernel: jax.Array, bias: jax.Array | None, num_classes: int) -> None:
    check_positive_int(num_classes, "num_classes")
    if kernel.ndim != 2 or kernel.shape[0] != dim:
        raise ValueError(f"kernel has shape {tuple(kernel.shape)}; expected [D={dim}, Vp]")
    if kernel.shape[1] < num_classes:
        raise ValueError(
            f"kernel has {kernel.shape[1]} columns; expected at least num_classes={num_classes}"
        )
    if bias is not None and bias.shape != kernel.shape[1:]:
        raise ValueError(f"bias has shape {tuple(bias.shape)}; expected ({kernel.shape[1]},)")


def _chunks(kernel: jax.Array, bias: jax.Array | None, num_classes: int, chunk: int):
    """Kernel `[n, D, C]` and bias `[n, C]` chunks covering the first n * C >= V columns."""
    n = -(-num_classes // chunk)
    width = n * chunk
    kernel = kernel[:, :width]
    if kernel.shape[1] < width:
        kernel = jnp.pad(kernel, ((0, 0), (0, width - kernel.shape[1])))
    kernel = kernel.reshape(kernel.shape[0], n, chunk).transpose(1, 0, 2)
    if bias is None:
        bias = jnp.zeros((n, chunk), jnp.float32)
    else:
        bias = bias[:width].astype(jnp.float32)
        bias = jnp.pad(bias, (0, width - bias.shape[0])).reshape(n, chunk)
    return kernel, bias


def _chunk_logits(hidden, kernel_c, bias_c, index, num_classes: int):
    """Float32 logits `[N, C]` of chunk `index` (padding classes at -inf) and their class ids."""
    chunk = kernel_c.shape[-1]
    cols = index * chunk + jnp.arange(chunk)
    logits = jnp.matmul(hidden, kernel_c, preferred_element_type=jnp.float32) + bias_c
    return jnp.where(cols < num_classes, logits, -jnp.inf), cols


def _forward(num_classes, chunk, hidden, kernel, bias, labels):
    kernel_c, bias_c = _chunks(kernel, bias, num_classes, chunk)
    n = kernel_c.shape[0]
    rows = hidden.shape[0]

    def step(carry, xs):
        run_max, run_sum, label_logit = carry
        k_c, b_c, index = xs
        logits, cols = _chunk_logits(hidden, k_c, b_c, index, num_classes)
        new_max = jnp.maximum(run_max, jnp.max(logits, axis=-1))
        run_sum = run_sum * jnp.exp(run_max - new_max) + jnp.sum(
            jnp.exp(logits - new_max[:, None]), axis=-1
        )
        hit = cols[None, :] == labels[:, None]
        label_logit = label_logit + jnp.sum(jnp.where(hit, logits, 0.0), axis=-1)
        return (new_max, run_sum, label_logit), None

    init = (
        jnp.full((rows,), -jnp.inf, jnp.float32),
        jnp.zeros((rows,), jnp.float32),
        jnp.zeros((rows,), jnp.float32),
    )
    (run_max, run_sum, label_logit), _ = jax.lax.scan(step, init, (kernel_c, bias_c, jnp.arange(n)))
    log_z = run_max + jnp.log(run_sum)
    return log_z - label_logit, log_z


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _chunked_ce(num_classes, chunk, hidden, kernel, bias, labels):
    return _forward(num_classes, chunk, hidden, kernel, bias, labels)


def _chunked_ce_fwd(num_classes, chunk, hidden, kernel, bias, labels):
    nll, log_z = _forward(num_classes, chunk, hidden, kernel, bias, labels)
    return (nll, log_z), (hidden, kernel, bias, labels, log_z)


def _chunked_ce_bwd(num_classes, chunk, residuals, cotangents):
    hidden, kernel, bias, labels, log_z = residuals
    g_nll, g_log_z = (jnp.asarray(g, jnp.float32) for g in cotangents)
    kernel_c, bias_c = _chunks(kernel, bias, num_classes, chunk)
    n = kernel_c.shape[0]
    g_soft = (g_nll + g_log_z)[:, None]

    def step(d_hidden, xs):
        k_c, b_c, index = xs
        logits, cols = _chunk_logits(hidden, k_c, b_c, index, num_classes)
        hit = cols[None, :] == labels[:, None]
        # d nll / d logits = softmax - onehot(label); d log_z / d logits = softmax.
        d_logits = g_soft * jnp.exp(logits - log_z[:, None]) - jnp.where(hit, g_nll[:, None], 0.0)
        d_low = d_logits.astype(kernel.dtype)
        d_hidden = d_hidden + jnp.matmul(d_low, k_c.T, preferred_element_type=jnp.float32)
        d_kernel = jnp.matmul(hidden.T, d_low, preferred_element_type=jnp.float32)
        return d_hidden, (d_kernel.astype(kernel.dtype), jnp.sum(d_logits, axis=0))

    d_hidden = jnp.zeros(hidden.shape, jnp.float32)
    d_hidden, (d_kernel, d_bias) = jax.lax.scan(step, d_hidden, (kernel_c, bias_c, jnp.arange(n)))
    width = kernel.shape[1]
    d_kernel = d_kernel.transpose(1, 0, 2).reshape(kernel.shape[0], n * chunk)
    d_kernel = _fit(d_kernel, width, axis=1)
    if bias is not None:
        d_bias = _fit(d_bias.reshape(n * chunk), width, axis=0).astype(bias.dtype)
    else:
        d_bias = None
    return d_hidden.astype(hidden.dtype), d_kernel, d_bias, None


def _fit(x: jax.Array, width: int, axis: int) -> jax.Array:
    """`x` cut or zero-padded to `width` along `axis`."""
    size = x.shape[axis]
    if size >= width:
        return jax.lax.slice_in_dim(x, 0, width, axis=axis)
    pad = [(0, 0)] * x.ndim
    pad[axis] = (0, width - size)
    return jnp.pad(x, pad)


_chunked_ce.defvjp(_chunked_ce_fwd, _chunked_ce_bwd)
