"""Vocab-chunked cross-entropy: equal to the full log-softmax in value and gradient, less memory."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffax.core import LinearHead, chunked_cross_entropy, head_logits

V, VP = 50_257, 50_304  # GPT-2 vocabulary, padded to a multiple of 128
N, D = 5, 8


def _inputs(dtype=jnp.float32):
    k = jax.random.split(jax.random.key(0), 4)
    hidden = jax.random.normal(k[0], (N, D)).astype(dtype)
    kernel = (0.7 * jax.random.normal(k[1], (D, VP))).astype(dtype)
    # Padding columns that would dominate any softmax they took part in.
    kernel = kernel.at[:, V:].set(5.0)
    bias = jax.random.normal(k[2], (VP,)).at[V:].set(100.0)
    labels = jax.random.randint(k[3], (N,), 0, V).at[0].set(V - 1).at[1].set(0)
    return hidden, kernel, bias, labels


def _full(hidden, kernel, bias, labels):
    """The reference: float32 logits over the real classes, `log_softmax`, autodiff."""
    logits = jnp.matmul(hidden, kernel[:, :V], preferred_element_type=jnp.float32)
    if bias is not None:
        logits = logits + bias[:V]
    log_p = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(log_p, labels[:, None], axis=-1)[:, 0]
    return nll, jax.nn.logsumexp(logits, axis=-1)


def _objective(ce):
    # Distinct weights per row and a z-loss, so both outputs' cotangents are exercised.
    def f(hidden, kernel, bias, labels):
        nll, log_z = ce(hidden, kernel, bias, labels)
        return jnp.sum(nll * jnp.arange(1.0, N + 1)) + 0.1 * jnp.sum(jnp.square(log_z))

    return f


def _assert_close(got, want, rtol=1e-5):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    # Entries that cancel to ~0 (softmax - onehot) are compared on the scale of the array.
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * np.abs(want).max())


@pytest.mark.parametrize("chunk_size", [8192, 1000, 12_576, V, 65_536])
def test_value_and_gradient_match_full_log_softmax(chunk_size):
    hidden, kernel, bias, labels = _inputs()

    def chunked(h, k, b, y):
        return chunked_cross_entropy(h, k, y, num_classes=V, chunk_size=chunk_size, bias=b)

    got, want = chunked(hidden, kernel, bias, labels), _full(hidden, kernel, bias, labels)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == jnp.float32 and g.shape == (N,)
        np.testing.assert_allclose(g, w, rtol=1e-5)
    grads = jax.grad(_objective(chunked), argnums=(0, 1, 2))(hidden, kernel, bias, labels)
    ref = jax.grad(_objective(_full), argnums=(0, 1, 2))(hidden, kernel, bias, labels)
    for g, w in zip(grads, ref, strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype
        _assert_close(g, w)
    # Padding columns get exactly zero gradient (they are not part of the softmax).
    assert float(jnp.abs(grads[1][:, V:]).max()) == 0.0
    assert float(jnp.abs(grads[2][V:]).max()) == 0.0


def test_without_bias_under_jit():
    hidden, kernel, _, labels = _inputs()

    @jax.jit
    def chunked(h, k, y):
        return chunked_cross_entropy(h, k, y, num_classes=V, chunk_size=4096)

    np.testing.assert_allclose(
        chunked(hidden, kernel, labels)[0], _full(hidden, kernel, None, labels)[0], rtol=1e-5
    )
    grads = jax.grad(lambda h, k: jnp.sum(chunked(h, k, labels)[0]), argnums=(0, 1))(hidden, kernel)
    ref = jax.grad(lambda h, k: jnp.sum(_full(h, k, None, labels)[0]), argnums=(0, 1))(
        hidden, kernel
    )
    for g, w in zip(grads, ref, strict=True):
        _assert_close(g, w)


def test_bfloat16_inputs_accumulate_in_float32():
    hidden, kernel, bias, labels = _inputs(jnp.bfloat16)
    bias = bias.astype(jnp.bfloat16)
    nll, log_z = chunked_cross_entropy(
        hidden, kernel, labels, num_classes=V, chunk_size=8192, bias=bias
    )
    want = _full(hidden, kernel, bias.astype(jnp.float32), labels)
    np.testing.assert_allclose(nll, want[0], rtol=1e-5)
    np.testing.assert_allclose(log_z, want[1], rtol=1e-5)
    grads = jax.grad(
        lambda h, k: jnp.sum(chunked_cross_entropy(h, k, labels, num_classes=V, bias=bias)[0]),
        argnums=(0, 1),
    )(hidden, kernel)
    assert grads[0].dtype == jnp.bfloat16 and grads[1].dtype == jnp.bfloat16
    ref = jax.grad(
        lambda h, k: jnp.sum(_full(h, k, bias.astype(jnp.float32), labels)[0]), argnums=(0, 1)
    )(hidden.astype(jnp.float32), kernel.astype(jnp.float32))
    for g, w in zip(grads, ref, strict=True):
        _assert_close(g, w, rtol=2e-2)  # one bf16 rounding of the logit gradient


def test_head_logits_drop_padding():
    hidden, kernel, bias, _ = _inputs()
    head = LinearHead(hidden[None], kernel, bias)
    logits = head_logits(head, V)
    assert logits.shape == (1, N, V) and logits.dtype == jnp.float32
    want = np.asarray(hidden, np.float64) @ np.asarray(kernel, np.float64)[:, :V]
    np.testing.assert_allclose(logits[0], want + np.asarray(bias)[:V], rtol=1e-5, atol=1e-5)


def test_linear_head_is_a_pytree_with_a_static_chunk():
    hidden, kernel, bias, _ = _inputs()
    head = jax.jit(lambda h: LinearHead(h, kernel, bias, chunk_size=512))(hidden)
    assert head.chunk_size == 512 and len(jax.tree.leaves(head)) == 3


def test_bad_arguments_name_them():
    hidden, kernel, bias, labels = _inputs()
    with pytest.raises(ValueError, match="hidden"):
        chunked_cross_entropy(hidden[0], kernel, labels, num_classes=V)
    with pytest.raises(ValueError, match="kernel"):
        chunked_cross_entropy(hidden, kernel.T, labels, num_classes=V)
    with pytest.raises(ValueError, match="num_classes"):
        chunked_cross_entropy(hidden, kernel, labels, num_classes=VP + 1)
    with pytest.raises(ValueError, match="chunk_size"):
        chunked_cross_entropy(hidden, kernel, labels, num_classes=V, chunk_size=0)
    with pytest.raises(ValueError, match="labels"):
        chunked_cross_entropy(hidden, kernel, labels[:2], num_classes=V)
    with pytest.raises(TypeError, match="labels"):
        chunked_cross_entropy(hidden, kernel, labels.astype(jnp.float32), num_classes=V)
    with pytest.raises(ValueError, match="bias"):
        chunked_cross_entropy(hidden, kernel, labels, num_classes=V, bias=bias[:V])


def test_gradient_memory_is_under_a_quarter_of_full_logits():
    """Temp memory of the compiled gradient at B=8, L=1024, D=768, V=50,257 (bf16 like the model).

    Compile only (no run): `memory_analysis()` is a deterministic number for a given XLA.
    """
    rows, dim = 8 * 1024, 768
    hidden = jax.ShapeDtypeStruct((rows, dim), jnp.bfloat16)
    kernel = jax.ShapeDtypeStruct((dim, VP), jnp.bfloat16)
    labels = jax.ShapeDtypeStruct((rows,), jnp.int32)

    def full(h, k, y):
        return jnp.mean(_full(h, k, None, y)[0])

    def chunked(h, k, y):
        return jnp.mean(chunked_cross_entropy(h, k, y, num_classes=V, chunk_size=8192)[0])

    def temp_bytes(f):
        compiled = jax.jit(jax.grad(f, argnums=(0, 1))).lower(hidden, kernel, labels).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    full_bytes, chunked_bytes = temp_bytes(full), temp_bytes(chunked)
    mib = 2**20
    print(f"temp: full logits {full_bytes / mib:.0f} MiB, chunked {chunked_bytes / mib:.0f} MiB")
    assert chunked_bytes <= full_bytes / 4
