"""Multi-head attention with masks and a choice of backend.

Masks are described, not materialised, so each backend can use its own representation:

* `MaskSpec(kind, block_size)` says which positions may attend to which:
  - "full": every query sees every key (bidirectional; diffusion denoisers);
  - "causal": query i sees keys j <= i;
  - "block_causal": blocks of `block_size` positions; a query in block b sees keys in blocks
    <= b (bidirectional inside a block);
  - "block_diffusion": the BD3-LM two-stream sequence `[x_t ; x_0]` of length 2L (L a multiple
    of `block_size`): a noisy token of block b sees the noisy tokens of block b and the clean
    tokens of blocks < b; a clean token of block b sees the clean tokens of blocks <= b
    (Arriola et al. 2025, Block Diffusion: Interpolating Between Autoregressive and Diffusion
    Language Models).
* `segment_ids: [B, L]` int32 restricts attention to positions with the same id (packed
  documents); it combines with any kind.

Backends (`implementation`):

* "xla" (any platform): exact softmax attention in float32 scores. Long sequences are processed
  in query chunks under `jax.checkpoint`, so at most `[B, H, chunk, L]` scores are alive at once
  (forward or backward) instead of `[B, H, L, L]`; each query row is computed exactly as without
  chunking.
* "cudnn" (CUDA GPUs): cuDNN flash attention through `jax.nn.dot_product_attention` in bfloat16.
  "causal" without segment ids runs as cuDNN's causal mask; any other mask or segment ids reach
  cuDNN as a dense additive bias of `[B, 1, L, L]` bfloat16 (`[1, H, L, L]` when B = 1, the
  bias shapes whose gradient cuDNN supports). Needs an even L when masked and a head dimension
  that is a multiple of 8 and at most 256.
* "splash" (TPUs): the Pallas splash-attention kernel shipped with jax, in bfloat16, with the
  mask given to the kernel statically (block-sparse: fully masked tiles are skipped) and segment
  ids dynamically. Needs L to be a multiple of 128. Under `jax.set_mesh` the kernel runs per
  device through `jax.shard_map` (batch over ("data", "fsdp"), heads over "model").
* "auto": cudnn on GPU, splash on TPU, xla otherwise.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

BACKENDS = ("auto", "xla", "cudnn", "splash")
MASK_KINDS = ("full", "causal", "block_causal", "block_diffusion")

# The xla backend splits queries into chunks of this many positions above this length.
XLA_QUERY_CHUNK = 512
# Mesh axes the flash kernels are mapped over per device (see diffax.training.mesh).
_BATCH_AXES = ("data", "fsdp")
_HEAD_AXIS = "model"
_SPLASH_LANES = 128


@dataclasses.dataclass(frozen=True)
class MaskSpec:
    """Which positions attend to which (see the module docstring). Hashable and static.

    Args:
      kind: "full" | "causal" | "block_causal" | "block_diffusion".
      block_size: block length for the block kinds (>= 1); ignored otherwise.
    """

    kind: str = "full"
    block_size: int = 0

    def __post_init__(self):
        if self.kind not in MASK_KINDS:
            raise ValueError(
                f"mask kind={self.kind!r} is not allowed; allowed values: "
                f"{', '.join(map(repr, MASK_KINDS))}"
            )
        if self.kind in ("block_causal", "block_diffusion") and self.block_size < 1:
            raise ValueError(
                f"mask kind={self.kind!r} needs block_size >= 1, got {self.block_size}"
            )


FULL = MaskSpec()


def resolve_backend(implementation: str, platform: str | None = None) -> str:
    """The concrete backend for `implementation` on `platform` (default: the default backend).

    Args:
      implementation: "auto" | "xla" | "cudnn" | "splash" (the config key `model.attention`).
      platform: a jax platform name ("cpu", "gpu", "cuda", "tpu"); default `jax.default_backend()`.

    Returns:
      "xla" | "cudnn" | "splash": "auto" is "cudnn" on GPU, "splash" on TPU and "xla" elsewhere.

    Raises:
      ValueError: naming `model.attention` and the allowed values for anything else.
    """
    if implementation not in BACKENDS:
        raise ValueError(
            f"model.attention={implementation!r} is not allowed; allowed values: "
            f"{', '.join(map(repr, BACKENDS))}"
        )
    if implementation != "auto":
        return implementation
    platform = platform or jax.default_backend()
    return {"gpu": "cudnn", "cuda": "cudnn", "tpu": "splash"}.get(platform, "xla")


def segment_ids_from_eos(tokens: jax.Array, eos_id: int) -> jax.Array:
    """Document ids of a packed batch whose documents end with `eos_id`.

    An EOS token belongs to the document it ends: the id of position i is the number of EOS
    tokens strictly before i.

    Args:
      tokens: `[B, L]` int token ids.
      eos_id: the end-of-document token id.

    Returns:
      `[B, L]` int32 segment ids (0 for the first document of each row).
    """
    is_eos = (tokens == eos_id).astype(jnp.int32)
    return jnp.cumsum(is_eos, axis=-1) - is_eos


def positions_from_segments(segment_ids: jax.Array) -> jax.Array:
    """Position of each token inside its document (0 at each document start).

    Args:
      segment_ids: `[B, L]` int segment ids; a new document starts wherever the id changes.

    Returns:
      `[B, L]` int32 positions.
    """
    length = segment_ids.shape[-1]
    index = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), segment_ids.shape)
    start = jnp.concatenate(
        [jnp.ones_like(segment_ids[..., :1], bool), segment_ids[..., 1:] != segment_ids[..., :-1]],
        axis=-1,
    )
    first = jax.lax.cummax(jnp.where(start, index, 0), axis=segment_ids.ndim - 1)
    return index - first


def _check_two_stream(q_len: int, k_len: int, spec: MaskSpec) -> None:
    if q_len != k_len or q_len % 2 or (q_len // 2) % spec.block_size:
        raise ValueError(
            "mask kind='block_diffusion' needs a two-stream sequence of length 2L with L a "
            f"multiple of block_size={spec.block_size}, got q_len={q_len}, k_len={k_len}"
        )


def _allowed(qi, kj, length: int, spec: MaskSpec):
    """Whether query positions `qi[:, None]` may see key positions `kj[None, :]`.

    Works on numpy or jax index arrays (`length` is the full sequence length, used by the
    two-stream kind), so the splash kernel can get the same mask as a static numpy array.
    """
    qi, kj = qi[:, None], kj[None, :]
    if spec.kind == "full":
        return (qi >= 0) & (kj >= 0)
    if spec.kind == "causal":
        return kj <= qi
    if spec.kind == "block_causal":
        return kj // spec.block_size <= qi // spec.block_size
    half = length // 2
    q_clean, k_clean = qi >= half, kj >= half
    qb = (qi % half) // spec.block_size
    kb = (kj % half) // spec.block_size
    noisy_q = ~q_clean & ((~k_clean & (kb == qb)) | (k_clean & (kb < qb)))
    clean_q = q_clean & k_clean & (kb <= qb)
    return noisy_q | clean_q


def dense_mask(
    q_len: int, k_len: int, spec: MaskSpec = FULL, segment_ids: jax.Array | None = None
) -> jax.Array:
    """The boolean mask that `spec` and `segment_ids` describe (True: may attend).

    Args:
      q_len, k_len: query and key lengths (equal for the block kinds and with segment ids).
      spec: a `MaskSpec`.
      segment_ids: optional `[B, L]` int segment ids.

    Returns:
      `[B or 1, q_len, k_len]` bool.
    """
    if spec.kind == "block_diffusion":
        _check_two_stream(q_len, k_len, spec)
    allowed = _allowed(jnp.arange(q_len), jnp.arange(k_len), q_len, spec)
    allowed = jnp.broadcast_to(allowed, (q_len, k_len))[None]
    if segment_ids is not None:
        allowed = allowed & (segment_ids[:, :, None] == segment_ids[:, None, :])
    return allowed


def reference_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    mask: MaskSpec = FULL,
    segment_ids: jax.Array | None = None,
) -> jax.Array:
    """Plain softmax attention in float32 (a test oracle).

    Args:
      q, k, v: `[B, L, H, D]`.
      mask: a `MaskSpec`.
      segment_ids: optional `[B, L]` int segment ids.

    Returns:
      `[B, L, H, D]` in the dtype of `q`.
    """
    q32, k32, v32 = (a.astype(jnp.float32) for a in (q, k, v))
    scores = jnp.einsum("bqhd,bkhd->bhqk", q32, k32) / math.sqrt(q.shape[-1])
    allowed = dense_mask(q.shape[1], k.shape[1], mask, segment_ids)[:, None]
    scores = jnp.where(allowed, scores, -jnp.inf)
    weights = jax.nn.softmax(scores, axis=-1)
    return jnp.einsum("bhqk,bkhd->bqhd", weights, v32).astype(q.dtype)


def _check_inputs(q, k, v, mask, segment_ids) -> None:
    if not isinstance(mask, MaskSpec):
        raise TypeError(f"mask must be a MaskSpec, got {type(mask).__name__}")
    if q.ndim != 4 or q.shape != k.shape or q.shape != v.shape:
        raise ValueError(
            f"q, k, v must have the same shape [B, L, H, D], got {q.shape}, {k.shape}, {v.shape}"
        )
    if segment_ids is not None and tuple(segment_ids.shape) != q.shape[:2]:
        raise ValueError(
            f"segment_ids must have shape [B, L] = {q.shape[:2]}, got {segment_ids.shape}"
        )
    if segment_ids is not None and not jnp.issubdtype(segment_ids.dtype, jnp.integer):
        raise TypeError(f"segment_ids must be integers, got {segment_ids.dtype}")
    if mask.kind == "block_diffusion":
        _check_two_stream(q.shape[1], k.shape[1], mask)


# ---------------------------------------------------------------------------------------------
# xla


def _xla_attention(q, k, v, mask, segment_ids, *, chunk: int = XLA_QUERY_CHUNK):
    """Exact attention through `jax.nn.dot_product_attention(implementation="xla")`.

    Queries are processed `chunk` at a time (when `L > chunk` and `chunk` divides L) under
    `jax.checkpoint`, so only one chunk's `[B, H, chunk, L]` scores are alive.
    """
    batch, length = q.shape[:2]
    needs_mask = mask.kind != "full" or segment_ids is not None

    def block(q_block, start, seg_block):
        allowed = None
        if needs_mask:
            qi = start + jnp.arange(q_block.shape[1])
            allowed = _allowed(qi, jnp.arange(length), length, mask)[None]
            if segment_ids is not None:
                allowed = allowed & (seg_block[:, :, None] == segment_ids[:, None, :])
            allowed = jnp.broadcast_to(allowed, (allowed.shape[0], q_block.shape[1], length))
            allowed = allowed[:, None]
        return jax.nn.dot_product_attention(q_block, k, v, mask=allowed, implementation="xla")

    seg = segment_ids if segment_ids is not None else jnp.zeros((batch, length), jnp.int32)
    if length <= chunk or length % chunk:
        return block(q, 0, seg)
    n = length // chunk
    q_chunks = jnp.moveaxis(q.reshape(batch, n, chunk, *q.shape[2:]), 1, 0)
    seg_chunks = jnp.moveaxis(seg.reshape(batch, n, chunk), 1, 0)
    starts = jnp.arange(n) * chunk
    body = jax.checkpoint(lambda xs: block(*xs))
    out = jax.lax.map(body, (q_chunks, starts, seg_chunks))
    return jnp.moveaxis(out, 0, 1).reshape(q.shape)


# ---------------------------------------------------------------------------------------------
# cudnn


def _cudnn_arguments(
    shape: tuple[int, int, int, int], mask: MaskSpec, segment_ids: jax.Array | None
) -> dict:
    """The keyword arguments of `jax.nn.dot_product_attention` that express the mask for cuDNN.

    Args:
      shape: `(B, L, H, D)` of the queries.
      mask: a `MaskSpec`.
      segment_ids: optional `[B, L]` int segment ids.

    Returns:
      A dict with `implementation="cudnn"`, `is_causal` and `mask` (None or bool, shape
      `[B, 1, L, L]`, or `[1, H, L, L]` when B = 1).

    Raises:
      ValueError: naming `model.attention` for what cuDNN cannot run.
    """
    batch, length, heads, head_dim = shape
    if head_dim % 8 or head_dim > 256:
        raise ValueError(
            f"model.attention='cudnn' needs a head dimension that is a multiple of 8 and at most "
            f"256 (128 before Hopper), got {head_dim}; use model.attention='xla'"
        )
    kwargs = {"implementation": "cudnn", "is_causal": False, "mask": None}
    if mask.kind == "causal":
        kwargs["is_causal"] = True
        if segment_ids is None:
            return kwargs
        allowed = dense_mask(length, length, FULL, segment_ids)
    elif mask.kind == "full" and segment_ids is None:
        return kwargs
    else:
        allowed = dense_mask(length, length, mask, segment_ids)
    if length % 2:
        raise ValueError(
            f"model.attention='cudnn' with a mask or segment ids needs an even sequence length "
            f"(cuDNN's masked backward pass), got L={length}; use model.attention='xla' or pad "
            "the sequence"
        )
    # cuDNN always computes the bias gradient and supports it for [B, 1, L, L] and [1, H, L, L]
    # biases, not for one [1, 1, L, L] shared by the whole batch.
    if batch == 1:
        kwargs["mask"] = jnp.broadcast_to(allowed[:, None], (1, heads, length, length))
    else:
        kwargs["mask"] = jnp.broadcast_to(allowed[:, None], (batch, 1, length, length))
    return kwargs


def _cudnn_attention(q, k, v, mask, segment_ids):
    platform = jax.default_backend()
    if platform not in ("gpu", "cuda"):
        raise ValueError(
            f"model.attention='cudnn' needs a CUDA GPU, but the platform is {platform!r}; use "
            "model.attention='auto' or 'xla'"
        )
    kwargs = _cudnn_arguments(q.shape, mask, segment_ids)
    q16, k16, v16 = (a.astype(jnp.bfloat16) for a in (q, k, v))
    return jax.nn.dot_product_attention(q16, k16, v16, **kwargs).astype(q.dtype)


# ---------------------------------------------------------------------------------------------
# splash


def _splash_mask(spec: MaskSpec, length: int):
    """The splash kernel's 2-D mask `[L, L]` for `spec` (lazy for full and causal)."""
    from jax.experimental.pallas.ops.tpu import splash_attention as splash

    if spec.kind == "full":
        return splash.FullMask((length, length))
    if spec.kind == "causal":
        return splash.CausalMask((length, length))
    if spec.kind == "block_diffusion":
        _check_two_stream(length, length, spec)
    index = np.arange(length)
    return splash.NumpyMask(np.asarray(_allowed(index, index, length, spec), bool))


def _splash_block(length: int) -> int:
    return next(b for b in (512, 256, 128) if length % b == 0)


@functools.lru_cache(maxsize=64)
def _splash_kernel(spec: MaskSpec, length: int, num_heads: int, block: int, interpret: bool):
    """The splash kernel for one `[H, L, D]` example, built once per argument tuple."""
    from jax.experimental.pallas.ops.tpu import splash_attention as splash

    sizes = splash.BlockSizes(
        block_q=block,
        block_kv=block,
        block_kv_compute=block,
        block_q_dkv=block,
        block_kv_dkv=block,
        block_kv_dkv_compute=block,
        use_fused_bwd_kernel=True,
    )
    mask = splash.MultiHeadMask([_splash_mask(spec, length)] * num_heads)
    # The kernel holds its mask tables as arrays: build them outside any trace so the cached
    # kernel never captures tracers.
    with jax.ensure_compile_time_eval():
        return splash.make_splash_mha(
            mask, block_sizes=sizes, head_shards=1, q_seq_shards=1, interpret=interpret
        )


def _splash_local(q, k, v, segment_ids, *, mask: MaskSpec, block: int, interpret: bool):
    """Splash attention on local `[B, L, H, D]` arrays (no casting)."""
    from jax.experimental.pallas.ops.tpu import splash_attention as splash

    batch, length, heads, head_dim = q.shape
    kernel = _splash_kernel(mask, length, heads, block, interpret)
    scale = 1.0 / math.sqrt(head_dim)
    q = (q.astype(jnp.float32) * scale).astype(q.dtype)
    q, k, v = (jnp.swapaxes(a, 1, 2) for a in (q, k, v))  # [B, H, L, D]
    if segment_ids is None:
        out = jax.vmap(lambda q1, k1, v1: kernel(q1, k1, v1))(q, k, v)
    else:
        seg = segment_ids.astype(jnp.int32)
        out = jax.vmap(lambda q1, k1, v1, s: kernel(q1, k1, v1, splash.SegmentIds(s, s)))(
            q, k, v, seg
        )
    return jnp.swapaxes(out, 1, 2)


def _splash_attention(q, k, v, mask, segment_ids, *, block=None, interpret: bool = False):
    """Splash attention of `[B, L, H, D]` arrays in their own dtype, per device under a mesh.

    `block` is the kernel's tile size (default: the largest of 512, 256, 128 that divides L);
    `interpret` runs the kernel in the Pallas interpreter (any platform; for tests).
    """
    length = q.shape[1]
    if length % _SPLASH_LANES:
        raise ValueError(
            f"model.attention='splash' needs a sequence length that is a multiple of "
            f"{_SPLASH_LANES}, got L={length}; use model.attention='xla' or change the length"
        )
    block = block or _splash_block(length)
    local = functools.partial(_splash_local, mask=mask, block=block, interpret=interpret)
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1:
        return local(q, k, v, segment_ids)
    P = jax.sharding.PartitionSpec
    batch_axes = tuple(a for a in _BATCH_AXES if a in mesh.axis_names)
    head_axis = _HEAD_AXIS if _HEAD_AXIS in mesh.axis_names else None
    batch_shards = math.prod(mesh.shape[a] for a in batch_axes)
    head_shards = mesh.shape[head_axis] if head_axis else 1
    if q.shape[0] % batch_shards or q.shape[2] % head_shards:
        raise ValueError(
            f"model.attention='splash' runs per device: the batch ({q.shape[0]}) must divide "
            f"over {batch_axes} ({batch_shards}) and the heads ({q.shape[2]}) over "
            f"{head_axis!r} ({head_shards})"
        )
    spec = P(batch_axes or None, None, head_axis, None)
    if segment_ids is None:
        fn = jax.shard_map(
            lambda q1, k1, v1: local(q1, k1, v1, None),
            mesh=mesh,
            in_specs=(spec, spec, spec),
            out_specs=spec,
            check_vma=False,
        )
        return fn(q, k, v)
    fn = jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(spec, spec, spec, P(batch_axes or None, None)),
        out_specs=spec,
        check_vma=False,
    )
    return fn(q, k, v, segment_ids)


# ---------------------------------------------------------------------------------------------


def attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    mask: MaskSpec = FULL,
    segment_ids: jax.Array | None = None,
    implementation: str = "auto",
) -> jax.Array:
    """Scaled dot-product attention of `q, k, v: [B, L, H, D]` under `mask` and `segment_ids`.

    Args:
      q, k, v: queries, keys and values (same shape). The flash backends ("cudnn", "splash")
        compute in bfloat16 (inputs are cast; the result is cast back); "xla" computes in the
        input dtype with float32 scores and softmax.
      mask: a `MaskSpec`.
      segment_ids: optional `[B, L]` int32 document ids (packed sequences).
      implementation: "auto" | "xla" | "cudnn" | "splash" (see the module docstring).

    Returns:
      `[B, L, H, D]` in the dtype of `q`.

    Raises:
      ValueError: naming `model.attention` for an unknown backend, or for a mask, shape or
        platform the chosen backend cannot run (the message says what to use instead).
    """
    backend = resolve_backend(implementation)
    _check_inputs(q, k, v, mask, segment_ids)
    if backend == "xla":
        return _xla_attention(q, k, v, mask, segment_ids)
    if backend == "cudnn":
        return _cudnn_attention(q, k, v, mask, segment_ids)
    platform = jax.default_backend()
    if platform != "tpu":
        raise ValueError(
            f"model.attention='splash' needs a TPU, but the platform is {platform!r}; use "
            "model.attention='auto' or 'xla'"
        )
    q16, k16, v16 = (a.astype(jnp.bfloat16) for a in (q, k, v))
    return _splash_attention(q16, k16, v16, mask, segment_ids).astype(q.dtype)
