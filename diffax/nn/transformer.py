"""A DiT-style bidirectional transformer for token diffusion (Flax NNX), laid out for scale.

Time enters through adaptive layer norm with zero-initialised gates (adaLN-zero; Peebles & Xie
2023, "Scalable Diffusion Models with Transformers") from a `cond_dim`-wide condition (128 in
MDLM/SEDD); positions through rotary embeddings. With `time_conditioning=False` the network
ignores t (a time-free denoiser, valid for the masked process; Zheng et al. 2024, Ou et al. 2024).

At scale (MaxText's recipe): the blocks run under `scan` with stacked parameters (HLO size
independent of depth) and `checkpoint` (remat) with a configurable policy; attention goes through
`diffax.nn.attention` (flash kernels, packed-document segment ids, block masks); q, k, v and the
output projection have per-head kernels `[D, H, K]` / `[H, K, D]` so a tensor-parallel split of
"heads" never cuts a fused axis; adaLN kernels carry a "cond" input axis (unmapped by default:
replicated, so their outputs are replicated too); the output head is `("embed", "vocab")` with
the vocab padded to a multiple of `vocab_multiple` so it shards evenly over "model".

Parameter layout (pure dict). `scan_layers=True`: `blocks/<name>/...` arrays carry a leading
`[depth]` axis (logical axis "layers", unmapped). `scan_layers=False`: `blocks/<i>/<name>/...`
for i in 0..depth-1. `stack_blocks` / `unstack_blocks` convert between the two.

Times may be per token (`t [B, L]`: block diffusion's two-stream pass, a clean prefix at t = 0);
`init_cache` / `forward_cached` run queries against a per-layer key/value cache (block diffusion
and Fast-dLLM decoding; `diffax.nn.block_models` builds the samplers' protocols from them).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from diffax.nn.attention import FULL, MaskSpec, positions_from_segments, resolve_backend
from diffax.nn.attention import attention as attend
from diffax.nn.layers import (
    Dense,
    Einsum,
    Embed,
    constrain_batch,
    layer_norm,
    remat_policy,
    rotary,
    sinusoidal_embedding,
)

LAYERS_AXIS = "layers"  # logical name of the stacked-parameter axis (never sharded by default)


def _per_token(a: jax.Array) -> jax.Array:
    """A per-example `[B, D]` modulation as `[B, 1, D]`; a per-token `[B, L, D]` one as is."""
    return a if a.ndim == 3 else a[:, None]


def _modulate(x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
    return x * (1.0 + _per_token(scale)) + _per_token(shift)


class KVCache(NamedTuple):
    """Keys and values of every layer at every cached position (a pytree).

    Attributes:
      k, v: `[depth, B, length, H, head_dim]` in the compute dtype; keys carry their rotary
        embedding. Both layouts (`scan_layers` True or False) use this stacked form.
    """

    k: jax.Array
    v: jax.Array


def _dense_attention(q, k, v, allowed):
    """Softmax attention of `q [B, Q, H, D]` over `k, v [B, S, H, D]` in float32 scores.

    `allowed`: bool `[Q, S]` (None: all keys). Returns `[B, Q, H, D]` in the dtype of `q`.
    """
    scores = jnp.einsum("bqhd,bshd->bhqs", q.astype(jnp.float32), k.astype(jnp.float32))
    scores = scores / math.sqrt(q.shape[-1])
    if allowed is not None:
        scores = jnp.where(allowed, scores, -jnp.inf)
    weights = jax.nn.softmax(scores, axis=-1)
    return jnp.einsum("bhqs,bshd->bqhd", weights, v.astype(jnp.float32)).astype(q.dtype)


class Block(nnx.Module):
    """Pre-norm attention + MLP block with adaLN-zero modulation from a condition `c`.

    `c` is `[B, C]` (one time per example) or `[B, L, C]` (per-token times).
    """

    def __init__(self, dim, num_heads, mlp_ratio, cond_dim, *, rngs, dtype, attention):
        head_dim = dim // num_heads
        self.attention = attention
        proj_in = lambda: Einsum(
            "bld,dhk->blhk",
            (dim, num_heads, head_dim),
            ("embed", "heads", None),
            fan_in=dim,
            rngs=rngs,
            dtype=dtype,
        )
        self.q, self.k, self.v = proj_in(), proj_in(), proj_in()
        self.proj = Einsum(
            "blhk,hkd->bld",
            (num_heads, head_dim, dim),
            ("heads", None, "embed"),
            fan_in=dim,
            rngs=rngs,
            bias_axes=("embed",),
            dtype=dtype,
        )
        hidden = int(dim * mlp_ratio)
        self.fc1 = Dense(dim, hidden, ("embed", "mlp"), rngs=rngs, dtype=dtype)
        self.fc2 = Dense(hidden, dim, ("mlp", "embed"), rngs=rngs, dtype=dtype)
        self.ada = Dense(cond_dim, 6 * dim, ("cond", None), rngs=rngs, zero_init=True, dtype=dtype)

    def __call__(self, x, c, positions, segment_ids, mask):
        """x: `[B, L, D]`; c: `[B, C]` or `[B, L, C]`; positions: `[L]` or `[B, L]`.

        Returns `[B, L, D]`.
        """
        attention = lambda q, k, v: (
            attend(q, k, v, mask=mask, segment_ids=segment_ids, implementation=self.attention),
            None,
        )
        x, _ = self._apply(x, c, positions, attention)
        return x

    def cached(self, x, c, positions, k_cache, v_cache, start, allowed, full):
        """The block on queries `x [B, Q, D]` at `positions [Q]` against a key/value cache.

        The queries' keys/values are written into `k_cache, v_cache [B, S, H, K]` at
        `[start, start + Q)`; the queries attend to the updated cache where `allowed [Q, S]`
        (None: everywhere). `full` (static): the queries fill the whole cache and see all of it,
        so the backend's attention runs on them directly. Returns `(x, (k_cache, v_cache))`.
        """

        def attention(q, k, v):
            k_new = jax.lax.dynamic_update_slice(k_cache, k.astype(k_cache.dtype), (0, start, 0, 0))
            v_new = jax.lax.dynamic_update_slice(v_cache, v.astype(v_cache.dtype), (0, start, 0, 0))
            if full:
                out = attend(q, k, v, mask=FULL, implementation=self.attention)
            else:
                out = _dense_attention(q, k_new, v_new, allowed)
            return out, (k_new, v_new)

        return self._apply(x, c, positions, attention)

    def _apply(self, x, c, positions, attention):
        shift1, scale1, gate1, shift2, scale2, gate2 = jnp.split(
            constrain_batch(self.ada(c)), 6, axis=-1
        )
        h = _modulate(layer_norm(x), shift1, scale1)
        q, k, v = rotary(self.q(h), positions), rotary(self.k(h), positions), self.v(h)
        out, extra = attention(q, k, v)
        x = x + _per_token(gate1) * self.proj(out)
        h = _modulate(layer_norm(x), shift2, scale2)
        h = self.fc2(jax.nn.gelu(self.fc1(h)))
        return x + _per_token(gate2) * h, extra


class DiffusionTransformer(nnx.Module):
    """Bidirectional transformer mapping noisy tokens and time to per-position logits.

    Args:
      num_input_ids: ids the network reads (V + 1 for the masked process: the mask is V).
      num_classes: classes it predicts (V).
      max_len: longest sequence (kept for shape checks; rotary positions need no table).
      dim: model width; depth: number of blocks; num_heads: attention heads (dim % heads == 0,
        even head size).
      rngs: `nnx.Rngs` for parameter initialisation.
      mlp_ratio: MLP hidden width / dim.
      time_conditioning: if False, t is ignored (time-free denoiser).
      dtype: computation dtype (float32 or bfloat16); parameters are float32.
      cond_dim: width of the time condition that feeds every adaLN projection.
      attention: attention backend, "auto" | "xla" | "cudnn" | "splash" (`diffax.nn.attention`).
      scan_layers: run the blocks under `nnx.scan` with stacked parameters (else an unrolled
        list of blocks; the same math).
      remat: rematerialisation of each block, a name accepted by `remat_policy`.
      vocab_multiple: the output head has `num_classes` rounded up to a multiple of this many
        columns (the padding is sliced off the logits and masked by the chunked loss).

    Call: `model(tokens [B, L] int32, t scalar, [B] or per-token [B, L], *, segment_ids=None,
    positions=None, mask=None) -> logits [B, L, num_classes] float32`. Decoding with a key/value
    cache: `init_cache` and `forward_cached`.
    """

    def __init__(
        self,
        num_input_ids: int,
        num_classes: int,
        max_len: int,
        dim: int,
        depth: int,
        num_heads: int,
        *,
        rngs: nnx.Rngs,
        mlp_ratio: float = 4.0,
        time_conditioning: bool = True,
        dtype: jnp.dtype = jnp.float32,
        cond_dim: int = 128,
        attention: str = "auto",
        scan_layers: bool = True,
        remat: str = "none",
        vocab_multiple: int = 128,
    ):
        if dim % num_heads or (dim // num_heads) % 2:
            raise ValueError(
                f"dim={dim} must be divisible by num_heads={num_heads} with an even head size"
            )
        if depth < 1:
            raise ValueError(f"model.depth must be >= 1, got {depth}")
        if cond_dim < 1:
            raise ValueError(f"model.cond_dim must be >= 1, got {cond_dim}")
        if not isinstance(vocab_multiple, int) or vocab_multiple < 1:
            raise ValueError(f"model.vocab_multiple must be an integer >= 1, got {vocab_multiple}")
        resolve_backend(attention)  # raises ValueError naming model.attention
        remat_policy(remat)  # raises ValueError naming model.remat
        self.num_input_ids, self.num_classes, self.max_len = num_input_ids, num_classes, max_len
        self.dim, self.depth, self.cond_dim, self.num_heads = dim, depth, cond_dim, num_heads
        self.time_conditioning, self.dtype = time_conditioning, dtype
        self.attention, self.scan_layers, self.remat = attention, bool(scan_layers), remat
        self.padded_classes = -(-num_classes // vocab_multiple) * vocab_multiple

        self.embed = Embed(num_input_ids, dim, rngs=rngs, dtype=dtype)
        # About cond_dim sinusoidal features of t feed the time MLP. 256 features (DiT's choice)
        # trained the quick start ~0.1 bits/char worse than 128 at cond_dim 128 (two seeds).
        self.time_features = cond_dim + cond_dim % 2  # sinusoidal features come in cos/sin pairs
        self.time_fc1 = Dense(self.time_features, cond_dim, (None, None), rngs=rngs)
        self.time_fc2 = Dense(cond_dim, cond_dim, (None, None), rngs=rngs)
        make = lambda r: Block(
            dim, num_heads, mlp_ratio, cond_dim, rngs=r, dtype=dtype, attention=attention
        )
        if self.scan_layers:
            self.blocks = nnx.split_rngs(splits=depth)(nnx.vmap(make, in_axes=0, out_axes=0))(rngs)
            for _, node in nnx.iter_graph(self.blocks):
                if isinstance(node, nnx.Variable):
                    axes = node.get_metadata().get("logical_axes") or (None,) * (node.ndim - 1)
                    node.set_metadata("logical_axes", (LAYERS_AXIS, *axes))
        else:
            self.blocks = nnx.List([make(rngs) for _ in range(depth)])
        self.final_ada = Dense(
            cond_dim, 2 * dim, ("cond", None), rngs=rngs, zero_init=True, dtype=dtype
        )
        self.head = Dense(
            dim, self.padded_classes, ("embed", "vocab"), rngs=rngs, zero_init=True, dtype=dtype
        )

    def _condition(self, t: jax.Array, batch: int, length: int) -> jax.Array:
        """The adaLN condition: `[B, C]` for one time per example, `[B, L, C]` per token."""
        t = jnp.asarray(t, jnp.float32)
        per_token = t.ndim == 2
        if t.shape not in ((), (1,), (batch,), (batch, length)):
            raise ValueError(
                f"t must be a scalar, [B] = ({batch},) or per-token [B, L] = ({batch}, {length}) "
                f"times, got shape {t.shape}"
            )
        if not self.time_conditioning:  # one row per example: never a [B, L, 6D] modulation
            t, per_token = jnp.zeros((batch,), jnp.float32), False
        flat = t.reshape(-1) if per_token else jnp.broadcast_to(t, (batch,))
        c = self.time_fc2(
            jax.nn.silu(self.time_fc1(sinusoidal_embedding(flat, self.time_features)))
        )
        c = jax.nn.silu(c).astype(self.dtype)
        return constrain_batch(c.reshape(batch, length, -1) if per_token else c)

    def _scan_blocks(self, body, x, xs=None):
        """Runs `body(block, x, xs_layer) -> (x, ys_layer)` over the blocks.

        `xs` (a pytree with a leading `[depth]` axis, or None) is sliced per layer; the `ys` come
        back stacked on a leading `[depth]` axis.
        """
        # jax.lax.scan / jax.checkpoint over the blocks' pure state (not nnx.scan / nnx.remat):
        # the same program, and a module built outside a `lax` loop (a sampler) can be called
        # inside it, which NNX's lifted transforms refuse ("different trace level").
        policy = remat_policy(self.remat)

        def run(graphdef):
            def apply(state, x, xs_layer):
                return body(nnx.merge(graphdef, state), constrain_batch(x), xs_layer)

            if policy is None:
                return apply
            # Inside scan, CSE across iterations is already impossible (jax.checkpoint docs).
            return jax.checkpoint(apply, policy=policy, prevent_cse=not self.scan_layers)

        if self.scan_layers:
            graphdef, state = nnx.split(self.blocks)
            step = run(graphdef)
            return jax.lax.scan(lambda x, layer: step(layer[0], x, layer[1]), x, (state, xs))
        ys = []
        for i, block in enumerate(self.blocks):
            graphdef, state = nnx.split(block)
            x, y = run(graphdef)(state, x, jax.tree.map(lambda a, i=i: a[i], xs))
            ys.append(y)
        return x, jax.tree.map(lambda *a: jnp.stack(a), *ys)

    def _run_blocks(self, x, c, positions, segment_ids, mask):
        body = lambda block, x, _: (block(x, c, positions, segment_ids, mask), None)
        return self._scan_blocks(body, x)[0]

    def _output(self, x: jax.Array, c: jax.Array) -> jax.Array:
        shift, scale = jnp.split(constrain_batch(self.final_ada(c)), 2, axis=-1)
        return constrain_batch(_modulate(layer_norm(x), shift, scale))

    def _logits(self, h: jax.Array) -> jax.Array:
        kernel, bias = self.head_weights()
        logits = jnp.dot(h, kernel, preferred_element_type=jnp.float32)
        if bias is not None:
            logits = logits + bias.astype(jnp.float32)
        return logits[..., : self.num_classes]

    def features(
        self,
        tokens: jax.Array,
        t: jax.Array,
        *,
        segment_ids: jax.Array | None = None,
        positions: jax.Array | None = None,
        mask: MaskSpec | None = None,
    ) -> jax.Array:
        """The normed, modulated hidden state that the output head reads.

        Args:
          tokens: `[B, L]` int32 in [0, num_input_ids).
          t: scalar, `[B]`, or per-token `[B, L]` times in [0, 1] (per-token: every position
            gets its own adaLN shift / scale / gate; ignored with `time_conditioning=False`).
          segment_ids: optional `[B, L]` int32 document ids of a packed batch: attention stays
            inside a document.
          positions: optional rotary positions `[L]` or `[B, L]`; default: restart at 0 in each
            segment when `segment_ids` is given, else `arange(L)`.
          mask: a `MaskSpec` (default: full bidirectional attention).

        Returns:
          `[B, L, dim]` in the compute dtype, split over the batch axes under a mesh.
        """
        if tokens.ndim != 2:
            raise ValueError(f"tokens must have shape [B, L], got {tokens.shape}")
        b, length = tokens.shape
        if mask is not None and getattr(mask, "kind", None) == "block_diffusion":
            # The two-stream [x_t ; x_0] holds two copies of a sequence of length L = 2L / 2.
            if length // 2 > self.max_len:
                raise ValueError(
                    f"two-stream sequence length {length} = 2 x {length // 2} exceeds "
                    f"2 x max_len={self.max_len}"
                )
        elif length > self.max_len:
            raise ValueError(f"sequence length {length} exceeds max_len={self.max_len}")
        if segment_ids is not None and segment_ids.shape != tokens.shape:
            raise ValueError(
                f"segment_ids must have the shape of tokens {tokens.shape}, got {segment_ids.shape}"
            )
        if mask is None:
            mask = FULL
        if not isinstance(mask, MaskSpec):
            raise TypeError(f"mask must be a diffax.nn.attention.MaskSpec, got {type(mask)}")
        if positions is None:
            positions = (
                jnp.arange(length, dtype=jnp.int32)
                if segment_ids is None
                else positions_from_segments(segment_ids)
            )
        c = self._condition(t, b, length)
        x = self._run_blocks(self.embed(tokens), c, positions, segment_ids, mask)
        return self._output(x, c)

    def head_weights(self) -> tuple[jax.Array, jax.Array | None]:
        """The output projection in the compute dtype.

        Returns:
          `(kernel [dim, V_pad], bias [V_pad] or None)`, V_pad = num_classes rounded up to
          `vocab_multiple`; columns >= num_classes are padding (zero at initialisation, never
          reached by the gradient of the logits or of the chunked loss).
        """
        bias = self.head.bias
        return (
            self.head.kernel[...].astype(self.dtype),
            None if bias is None else bias[...].astype(self.dtype),
        )

    def __call__(
        self,
        tokens: jax.Array,
        t: jax.Array,
        *,
        segment_ids: jax.Array | None = None,
        positions: jax.Array | None = None,
        mask: MaskSpec | None = None,
    ) -> jax.Array:
        """Logits `[B, L, num_classes]` float32 (`features @ kernel + bias`, padding sliced off).

        Arguments as in `features`.
        """
        h = self.features(tokens, t, segment_ids=segment_ids, positions=positions, mask=mask)
        return self._logits(h)

    def init_cache(self, batch: int, length: int) -> KVCache:
        """An empty key/value cache for `forward_cached` (zeros; every position unwritten).

        Args:
          batch: B.
          length: cached positions S (<= max_len).

        Returns:
          a `KVCache` with k, v `[depth, B, S, H, head_dim]` in the compute dtype.
        """
        if not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch must be an integer >= 1, got {batch!r}")
        if not isinstance(length, int) or not 1 <= length <= self.max_len:
            raise ValueError(
                f"length must be an integer in [1, max_len={self.max_len}], got {length!r}"
            )
        heads, head_dim = self.num_heads, self.dim // self.num_heads
        zeros = jnp.zeros((self.depth, batch, length, heads, head_dim), self.dtype)
        return KVCache(k=zeros, v=zeros)

    def forward_cached(
        self,
        tokens: jax.Array,
        t: jax.Array,
        cache: KVCache,
        start: jax.Array | int,
        *,
        limit: jax.Array | int | None = None,
    ) -> tuple[jax.Array, KVCache]:
        """Logits of the queries `tokens` at positions `[start, start + Q)` against a KV cache.

        In every layer the queries' keys and values (rotary applied at their positions) replace
        the cache's at `[start, start + Q)`; the queries then attend to the updated cache at
        positions j < `limit` (dense float32 scores). With a fresh cache, `start = 0`, Q = S
        and `limit=None` this is `model(tokens, t)` (full attention, through the model's
        attention backend); appending clean blocks one by one with `limit = start + K` and then
        querying a block gives that block's rows of `model(x, t, mask=MaskSpec("block_causal",
        K))` (the block diffusion cache, Arriola et al. 2025); full-attention queries of a window
        against a stale cache are Fast-dLLM's approximate cache (Wu et al. 2025).

        Args:
          tokens: `[B, Q]` int32 query tokens (Q static).
          t: scalar, `[B]` or per-token `[B, Q]` times in [0, 1].
          cache: a `KVCache` from `init_cache` (or a previous call) of S positions.
          start: int32 scalar (may be traced), the position of the first query; start + Q <= S
            (a traced start beyond that is clamped by `dynamic_update_slice`).
          limit: the queries see keys j < limit: None (all S), an int32 scalar, or `[Q]` per
            query (e.g. block-causal: the end of each query's block).

        Returns:
          `(logits [B, Q, num_classes] float32, the updated KVCache)`.
        """
        if tokens.ndim != 2:
            raise ValueError(f"tokens must have shape [B, Q], got {tokens.shape}")
        if not isinstance(cache, KVCache):
            raise TypeError(f"cache must be a KVCache from init_cache, got {type(cache).__name__}")
        b, q_len = tokens.shape
        depth, cb, length = cache.k.shape[:3]
        if depth != self.depth or cb != b:
            raise ValueError(
                f"cache must have shape [depth={self.depth}, B={b}, S, H, head_dim], got "
                f"{cache.k.shape}"
            )
        if q_len > length:
            raise ValueError(f"tokens has Q={q_len} positions, more than the cache's S={length}")
        full = limit is None and isinstance(start, int) and start == 0 and q_len == length
        allowed = None
        if limit is not None:
            limit = jnp.asarray(limit, jnp.int32)
            if limit.shape not in ((), (q_len,)):
                raise ValueError(f"limit must be a scalar or [Q] = ({q_len},), got {limit.shape}")
            allowed = jnp.arange(length)[None, :] < jnp.reshape(limit, (-1, 1))
            allowed = jnp.broadcast_to(allowed, (q_len, length))
        start = jnp.asarray(start, jnp.int32)
        positions = start + jnp.arange(q_len, dtype=jnp.int32)
        c = self._condition(t, b, q_len)

        def body(block, x, kv):
            return block.cached(x, c, positions, kv[0], kv[1], start, allowed, full)

        x, (k, v) = self._scan_blocks(body, self.embed(tokens), (cache.k, cache.v))
        return self._logits(self._output(x, c)), KVCache(k=k, v=v)


def _block_keys(blocks: dict) -> list:
    keys = sorted(blocks, key=int)
    if [int(k) for k in keys] != list(range(len(keys))):
        raise ValueError(f"unrolled blocks must be numbered 0..n-1, got keys {keys}")
    return keys


def stack_blocks(params: dict) -> dict:
    """Converts the pure-dict parameters of an unrolled model to the scanned layout.

    Args:
      params: pure dict of a `DiffusionTransformer(scan_layers=False)`; `params["blocks"]` maps
        block indices 0..depth-1 to per-block dicts.

    Returns:
      A new dict with `params["blocks"]` replaced by one per-block dict whose arrays have a
      leading `[depth]` axis (the layout of `scan_layers=True`); other entries are shared.
    """
    blocks = params["blocks"]
    per_layer = [blocks[k] for k in _block_keys(blocks)]
    return {**params, "blocks": jax.tree.map(lambda *xs: jnp.stack(xs), *per_layer)}


def unstack_blocks(params: dict) -> dict:
    """The inverse of `stack_blocks`: scanned-layout parameters to the unrolled layout.

    Args:
      params: pure dict of a `DiffusionTransformer(scan_layers=True)`.

    Returns:
      A new dict with `params["blocks"]` = `{i: block i's dict}` for i in 0..depth-1.
    """
    blocks = params["blocks"]
    depth = {x.shape[0] for x in jax.tree.leaves(blocks)}
    if len(depth) != 1:
        raise ValueError(f"stacked block parameters disagree on the depth axis: {sorted(depth)}")
    (depth,) = depth
    return {
        **params,
        "blocks": {i: jax.tree.map(lambda x, i=i: x[i], blocks) for i in range(depth)},
    }


_EMBEDDING = ("embed", "head")
_ADALN = ("time_fc1", "time_fc2", "final_ada", "ada")


def parameter_counts(params: Any) -> dict[str, int]:
    """Parameter counts of a `DiffusionTransformer`, split by role.

    Args:
      params: the module, its `nnx.State` of parameters (also abstract, from `nnx.eval_shape`),
        or their pure dict.

    Returns:
      `{"total", "embedding", "adaln", "body"}`: "embedding" is the token embedding and the
      output head (padded columns included), "adaln" every adaLN projection and the time MLP,
      "body" the rest (attention and MLP weights); the last three sum to "total".
    """
    if isinstance(params, nnx.Module):
        params = nnx.state(params, nnx.Param)
    if isinstance(params, nnx.State):
        params = nnx.to_pure_dict(params)
    counts = {"total": 0, "embedding": 0, "adaln": 0, "body": 0}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        names = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
        size = math.prod(getattr(leaf, "shape", ()))
        if names[0] in _EMBEDDING:
            role = "embedding"
        elif any(n in _ADALN for n in names):
            role = "adaln"
        else:
            role = "body"
        counts[role] += size
        counts["total"] += size
    return counts
