"""Attention masks and backends, checked against hand-written masks and a plain softmax oracle."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType

from diffax.nn import attention as attn
from diffax.nn.attention import (
    MaskSpec,
    attention,
    dense_mask,
    positions_from_segments,
    reference_attention,
    resolve_backend,
    segment_ids_from_eos,
)

SPECS = [
    MaskSpec("full"),
    MaskSpec("causal"),
    MaskSpec("block_causal", 4),
    MaskSpec("block_diffusion", 4),
]
SPEC_IDS = [s.kind for s in SPECS]
B, L, H, D = 2, 16, 2, 8
# Two packed rows: documents of lengths (5, 11) and (3, 6, 7).
SEGMENTS = np.array([[0] * 5 + [1] * 11, [0] * 3 + [1] * 6 + [2] * 7], np.int32)


def qkv(shape=(B, L, H, D), seed=0, dtype=jnp.float32):
    keys = jax.random.split(jax.random.key(seed), 3)
    return tuple(jax.random.normal(k, shape, dtype) for k in keys)


def output_and_grads(fn, q, k, v):
    """`fn(q, k, v)` and the gradients of a non-linear scalar of it w.r.t. q, k and v."""
    out, vjp = jax.vjp(fn, q, k, v)
    return out, vjp(jnp.cos(out))  # the gradient of sum(sin(out))


def assert_close(actual, desired, rtol=1e-5, atol=1e-6):
    for a, d in zip(jax.tree.leaves(actual), jax.tree.leaves(desired), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(d), rtol=rtol, atol=atol)


# ------------------------------------------------------------------------------- masks


def test_dense_mask_simple_kinds_match_hand_written():
    one = np.ones((4, 4), bool)
    causal = np.array([[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]], bool)
    block_causal = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]], bool)
    np.testing.assert_array_equal(dense_mask(4, 4, MaskSpec("full"))[0], one)
    np.testing.assert_array_equal(dense_mask(4, 4, MaskSpec("causal"))[0], causal)
    np.testing.assert_array_equal(dense_mask(4, 4, MaskSpec("block_causal", 2))[0], block_causal)


def test_dense_mask_block_diffusion_two_blocks_match_bd3lm():
    # [x_t ; x_0] with L = 4, two blocks of 2: noisy block b sees noisy block b and clean
    # blocks < b; clean block b sees clean blocks <= b (Arriola et al. 2025).
    #          noisy: 0  1  2  3   clean: 0  1  2  3
    expected = np.array(
        [
            [1, 1, 0, 0, 0, 0, 0, 0],  # noisy, block 0
            [1, 1, 0, 0, 0, 0, 0, 0],
            [0, 0, 1, 1, 1, 1, 0, 0],  # noisy, block 1
            [0, 0, 1, 1, 1, 1, 0, 0],
            [0, 0, 0, 0, 1, 1, 0, 0],  # clean, block 0
            [0, 0, 0, 0, 1, 1, 0, 0],
            [0, 0, 0, 0, 1, 1, 1, 1],  # clean, block 1
            [0, 0, 0, 0, 1, 1, 1, 1],
        ],
        bool,
    )
    np.testing.assert_array_equal(dense_mask(8, 8, MaskSpec("block_diffusion", 2))[0], expected)


def test_dense_mask_with_segments_is_block_diagonal():
    seg = jnp.array([[0, 0, 1, 1, 1]])
    expected = np.array(
        [
            [1, 0, 0, 0, 0],
            [1, 1, 0, 0, 0],
            [0, 0, 1, 0, 0],
            [0, 0, 1, 1, 0],
            [0, 0, 1, 1, 1],
        ],
        bool,
    )
    np.testing.assert_array_equal(dense_mask(5, 5, MaskSpec("causal"), seg)[0], expected)


def test_mask_spec_errors():
    with pytest.raises(ValueError, match="kind='blockcausal'.*allowed values.*'block_causal'"):
        MaskSpec("blockcausal")
    with pytest.raises(ValueError, match="block_size >= 1"):
        MaskSpec("block_causal")
    with pytest.raises(ValueError, match="block_size >= 1"):
        MaskSpec("block_diffusion", 0)
    with pytest.raises(ValueError, match="two-stream"):
        dense_mask(6, 6, MaskSpec("block_diffusion", 2))  # L = 3 is not a multiple of 2
    with pytest.raises(ValueError, match="two-stream"):
        dense_mask(8, 4, MaskSpec("block_diffusion", 2))


def test_segment_ids_from_eos_and_positions():
    eos = 9
    tokens = jnp.array([[4, 5, 9, 6, 9, 7, 7, 8], [9, 1, 2, 3, 4, 5, 6, 9]])
    seg = segment_ids_from_eos(tokens, eos)
    np.testing.assert_array_equal(seg, [[0, 0, 0, 1, 1, 2, 2, 2], [0, 1, 1, 1, 1, 1, 1, 1]])
    np.testing.assert_array_equal(
        positions_from_segments(seg), [[0, 1, 2, 0, 1, 0, 1, 2], [0, 0, 1, 2, 3, 4, 5, 6]]
    )
    assert seg.dtype == jnp.int32
    # Ids need not increase: a change of id starts a document.
    np.testing.assert_array_equal(
        positions_from_segments(jnp.array([[3, 3, 1, 1, 1, 3]])), [[0, 1, 0, 1, 2, 0]]
    )


# ------------------------------------------------------------------------------- backends


def test_resolve_backend():
    assert resolve_backend("auto") == "xla"  # this test run is CPU-only
    assert resolve_backend("auto", "cpu") == "xla"
    assert resolve_backend("auto", "gpu") == "cudnn"
    assert resolve_backend("auto", "cuda") == "cudnn"
    assert resolve_backend("auto", "tpu") == "splash"
    for name in ("xla", "cudnn", "splash"):
        assert resolve_backend(name, "cpu") == name
    with pytest.raises(ValueError, match="model.attention='flash'.*'auto', 'xla'"):
        resolve_backend("flash")
    with pytest.raises(ValueError, match="model.attention"):
        attention(*qkv(), implementation="XLA")


def test_attention_input_errors():
    q, k, v = qkv()
    with pytest.raises(ValueError, match="same shape"):
        attention(q, k[:, :8], v, implementation="xla")
    with pytest.raises(ValueError, match="segment_ids must have shape"):
        attention(q, k, v, segment_ids=jnp.zeros((B, L - 1), jnp.int32), implementation="xla")
    with pytest.raises(TypeError, match="segment_ids must be integers"):
        attention(q, k, v, segment_ids=jnp.zeros((B, L)), implementation="xla")
    with pytest.raises(TypeError, match="MaskSpec"):
        attention(q, k, v, mask="causal", implementation="xla")
    with pytest.raises(ValueError, match="two-stream"):
        attention(q, k, v, mask=MaskSpec("block_diffusion", 3), implementation="xla")


@pytest.mark.parametrize("use_segments", [False, True], ids=["plain", "segments"])
@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_xla_matches_reference(spec, use_segments):
    q, k, v = qkv()
    seg = jnp.asarray(SEGMENTS) if use_segments else None
    ref = lambda q, k, v: reference_attention(q, k, v, mask=spec, segment_ids=seg)  # noqa: E731
    xla = lambda q, k, v: attention(q, k, v, mask=spec, segment_ids=seg, implementation="xla")  # noqa: E731
    assert_close(output_and_grads(xla, q, k, v), output_and_grads(ref, q, k, v))


@pytest.mark.parametrize(
    "spec, use_segments",
    [(MaskSpec("full"), False)] + [(s, True) for s in SPECS],
    ids=["full-plain"] + [f"{s}-segments" for s in SPEC_IDS],
)
def test_xla_query_chunks_match_reference(spec, use_segments):
    # Chunks of 4 queries (what long sequences get with chunks of XLA_QUERY_CHUNK).
    q, k, v = qkv(seed=1)
    seg = jnp.asarray(SEGMENTS) if use_segments else None
    ref = lambda q, k, v: reference_attention(q, k, v, mask=spec, segment_ids=seg)  # noqa: E731
    chunked = lambda q, k, v: attn._xla_attention(q, k, v, spec, seg, chunk=4)  # noqa: E731
    assert_close(output_and_grads(chunked, q, k, v), output_and_grads(ref, q, k, v))


def test_reference_attention_matches_explicit_loop():
    # The oracle itself, against a per-query loop over the hand-checked dense mask.
    q, k, v = (np.asarray(a, np.float64) for a in qkv((1, 8, 1, 4), seed=2))
    allowed = np.asarray(dense_mask(8, 8, MaskSpec("block_diffusion", 2)))[0]
    expected = np.zeros_like(q)
    for i in range(8):
        s = np.array([q[0, i, 0] @ k[0, j, 0] / 2.0 for j in range(8)])
        w = np.where(allowed[i], np.exp(s - s[allowed[i]].max()), 0.0)
        expected[0, i, 0] = (w / w.sum()) @ v[0, :, 0]
    got = reference_attention(
        *(jnp.asarray(a, jnp.float32) for a in (q, k, v)), mask=MaskSpec("block_diffusion", 2)
    )
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("spec", [MaskSpec("full"), MaskSpec("causal")], ids=["full", "causal"])
def test_packed_documents_equal_documents_alone(spec):
    q, k, v = qkv(seed=3)
    seg = jnp.asarray(SEGMENTS)
    packed = attention(q, k, v, mask=spec, segment_ids=seg, implementation="xla")
    for row in range(B):
        ids = SEGMENTS[row]
        for doc in np.unique(ids):
            (where,) = np.nonzero(ids == doc)
            sl = slice(where[0], where[-1] + 1)
            alone = attention(
                q[row : row + 1, sl],
                k[row : row + 1, sl],
                v[row : row + 1, sl],
                mask=spec,
                implementation="xla",
            )
            np.testing.assert_allclose(packed[row : row + 1, sl], alone, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------- cudnn


def test_cudnn_arguments_full_and_causal_need_no_mask():
    assert attn._cudnn_arguments((B, L, H, 64), MaskSpec("full"), None) == {
        "implementation": "cudnn",
        "is_causal": False,
        "mask": None,
    }
    assert attn._cudnn_arguments((B, L, H, 64), MaskSpec("causal"), None) == {
        "implementation": "cudnn",
        "is_causal": True,
        "mask": None,
    }


def test_cudnn_arguments_masks_shapes():
    seg = jnp.asarray(SEGMENTS)
    kw = attn._cudnn_arguments((B, L, H, 64), MaskSpec("causal"), seg)
    assert kw["is_causal"]
    assert kw["mask"].shape == (B, 1, L, L) and kw["mask"].dtype == jnp.bool_
    # The causal part is cuDNN's own; the mask carries only the documents.
    np.testing.assert_array_equal(kw["mask"][:, 0], SEGMENTS[:, :, None] == SEGMENTS[:, None, :])
    kw = attn._cudnn_arguments((B, L, H, 64), MaskSpec("block_causal", 4), None)
    assert not kw["is_causal"] and kw["mask"].shape == (B, 1, L, L)
    # Batch 1: one bias per head, the shape whose gradient cuDNN computes.
    kw = attn._cudnn_arguments((1, L, H, 64), MaskSpec("full"), seg[:1])
    assert kw["mask"].shape == (1, H, L, L)


@pytest.mark.parametrize("batch", [1, B])
@pytest.mark.parametrize("use_segments", [False, True], ids=["plain", "segments"])
@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_cudnn_arguments_express_the_mask(spec, use_segments, batch):
    # The same arguments given to the exact XLA implementation must give the reference.
    q, k, v = (a[:batch] for a in qkv(seed=4))
    seg = jnp.asarray(SEGMENTS[:batch]) if use_segments else None
    kw = attn._cudnn_arguments(q.shape, spec, seg) | {"implementation": "xla"}
    got = jax.nn.dot_product_attention(q, k, v, **kw)
    assert_close(got, reference_attention(q, k, v, mask=spec, segment_ids=seg))


def test_cudnn_errors():
    with pytest.raises(ValueError, match="model.attention='cudnn'.*multiple of 8"):
        attn._cudnn_arguments((B, L, H, 12), MaskSpec("full"), None)
    with pytest.raises(ValueError, match="model.attention='cudnn'.*even sequence length"):
        attn._cudnn_arguments((B, 15, H, 64), MaskSpec("block_causal", 5), None)
    # Unmasked odd lengths are fine.
    assert attn._cudnn_arguments((B, 15, H, 64), MaskSpec("causal"), None)["is_causal"]
    with pytest.raises(ValueError, match="model.attention='cudnn' needs a CUDA GPU.*'xla'"):
        attention(*qkv(), implementation="cudnn")


# ------------------------------------------------------------------------------- splash

SPLASH_L = 256  # two 128-wide kernel tiles per axis, so fully masked tiles are skipped
SPLASH_SPECS = [
    MaskSpec("full"),
    MaskSpec("causal"),
    MaskSpec("block_causal", 128),
    MaskSpec("block_diffusion", 64),
]
SPLASH_SEGMENTS = np.array([[0] * 100 + [1] * 156, [0] * 30 + [1] * 200 + [2] * 26], np.int32)


def splash_interpret(q, k, v, spec, segment_ids):
    """The splash kernel with 128-wide tiles, run by the Pallas interpreter."""
    return attn._splash_attention(q, k, v, spec, segment_ids, block=128, interpret=True)


def test_splash_masks_match_hand_written():
    n = 8
    i, j = np.arange(n)[:, None], np.arange(n)[None, :]
    expected = {
        MaskSpec("full"): np.ones((n, n), bool),
        MaskSpec("causal"): j <= i,
        MaskSpec("block_causal", 2): j // 2 <= i // 2,
        # Same two-block BD3-LM example as the dense mask test.
        MaskSpec("block_diffusion", 2): np.array(
            [
                [1, 1, 0, 0, 0, 0, 0, 0],
                [1, 1, 0, 0, 0, 0, 0, 0],
                [0, 0, 1, 1, 1, 1, 0, 0],
                [0, 0, 1, 1, 1, 1, 0, 0],
                [0, 0, 0, 0, 1, 1, 0, 0],
                [0, 0, 0, 0, 1, 1, 0, 0],
                [0, 0, 0, 0, 1, 1, 1, 1],
                [0, 0, 0, 0, 1, 1, 1, 1],
            ],
            bool,
        ),
    }
    for spec, want in expected.items():
        np.testing.assert_array_equal(attn._splash_mask(spec, n)[:, :], want, err_msg=spec.kind)


@pytest.mark.parametrize("spec", SPLASH_SPECS, ids=[s.kind for s in SPLASH_SPECS])
def test_splash_interpret_matches_reference(spec):
    # The Pallas TPU kernel run by the Pallas interpreter on CPU, without and with segment ids.
    q, k, v = qkv((B, SPLASH_L, H, 16), seed=5)
    assert_close(splash_interpret(q, k, v, spec, None), reference_attention(q, k, v, mask=spec))
    seg = jnp.asarray(SPLASH_SEGMENTS)
    splash = functools.partial(splash_interpret, spec=spec, segment_ids=seg)
    ref = functools.partial(reference_attention, mask=spec, segment_ids=seg)
    assert_close(output_and_grads(splash, q, k, v), output_and_grads(ref, q, k, v), atol=1e-5)


def test_splash_under_mesh_runs_per_device():
    # 8 fake CPU devices (tests/conftest.py): batch over (data, fsdp), heads over model.
    mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "model"), axis_types=(AxisType.Auto,) * 3)
    spec = MaskSpec("block_causal", 128)
    q, k, v = qkv((4, SPLASH_L, 2, 16), seed=6)
    seg = jnp.asarray(np.concatenate([SPLASH_SEGMENTS, SPLASH_SEGMENTS[::-1]]))
    with jax.set_mesh(mesh):
        out = jax.jit(functools.partial(splash_interpret, spec=spec))(q, k, v, segment_ids=seg)
    assert_close(out, reference_attention(q, k, v, mask=spec, segment_ids=seg))


def test_splash_errors():
    with pytest.raises(ValueError, match="model.attention='splash' needs a TPU.*'xla'"):
        attention(*qkv(), implementation="splash")
    with pytest.raises(ValueError, match="model.attention='splash'.*multiple of 128"):
        attn._splash_attention(*qkv(), MaskSpec("full"), None, interpret=True)
