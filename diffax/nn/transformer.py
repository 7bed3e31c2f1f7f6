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
"""

from __future__ import annotations

import math
from typing import Any

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


def _modulate(x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
    return x * (1.0 + scale[:, None]) + shift[:, None]


class Block(nnx.Module):
    """Pre-norm attention + MLP block with adaLN-zero modulation from a condition `c: [B, C]`."""

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
        """x: `[B, L, D]`; c: `[B, cond_dim]`; positions: `[L]` or `[B, L]`. Returns `[B, L, D]`."""
        shift1, scale1, gate1, shift2, scale2, gate2 = jnp.split(
            constrain_batch(self.ada(c)), 6, axis=-1
        )
        h = _modulate(layer_norm(x), shift1, scale1)
        q, k, v = rotary(self.q(h), positions), rotary(self.k(h), positions), self.v(h)
        out = attend(q, k, v, mask=mask, segment_ids=segment_ids, implementation=self.attention)
        x = x + gate1[:, None] * self.proj(out)
        h = _modulate(layer_norm(x), shift2, scale2)
        h = self.fc2(jax.nn.gelu(self.fc1(h)))
        return x + gate2[:, None] * h


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

    Call: `model(tokens [B, L] int32, t [B] or scalar, *, segment_ids=None, positions=None,
    mask=None) -> logits [B, L, num_classes] float32`.
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
        self.dim, self.depth, self.cond_dim = dim, depth, cond_dim
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

    def _condition(self, t: jax.Array, batch: int) -> jax.Array:
        t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), (batch,))
        if not self.time_conditioning:
            t = jnp.zeros_like(t)
        c = self.time_fc2(jax.nn.silu(self.time_fc1(sinusoidal_embedding(t, self.time_features))))
        return constrain_batch(jax.nn.silu(c).astype(self.dtype))

    def _run_blocks(self, x, c, positions, segment_ids, mask):
        # jax.lax.scan / jax.checkpoint over the blocks' pure state (not nnx.scan / nnx.remat):
        # the same program, and a module built outside a `lax` loop (a sampler) can be called
        # inside it, which NNX's lifted transforms refuse ("different trace level").
        policy = remat_policy(self.remat)

        def run(graphdef):
            def apply(state, x):
                block = nnx.merge(graphdef, state)
                return block(constrain_batch(x), c, positions, segment_ids, mask)

            if policy is None:
                return apply
            # Inside scan, CSE across iterations is already impossible (jax.checkpoint docs).
            return jax.checkpoint(apply, policy=policy, prevent_cse=not self.scan_layers)

        if self.scan_layers:
            graphdef, state = nnx.split(self.blocks)
            step = run(graphdef)
            x, _ = jax.lax.scan(lambda x, layer: (step(layer, x), None), x, state)
            return x
        for block in self.blocks:
            graphdef, state = nnx.split(block)
            x = run(graphdef)(state, x)
        return x

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
          t: `[B]` or scalar times in [0, 1].
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
        if length > self.max_len:
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
        c = self._condition(t, b)
        x = self._run_blocks(self.embed(tokens), c, positions, segment_ids, mask)
        shift, scale = jnp.split(constrain_batch(self.final_ada(c)), 2, axis=-1)
        return constrain_batch(_modulate(layer_norm(x), shift, scale))

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
        kernel, bias = self.head_weights()
        logits = jnp.dot(h, kernel, preferred_element_type=jnp.float32)
        if bias is not None:
            logits = logits + bias.astype(jnp.float32)
        return logits[..., : self.num_classes]


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
