"""The DiT-style token transformer: scanned/unrolled layouts, remat, packing, padded vocab."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from diffax.nn import (
    DiffusionTransformer,
    parameter_counts,
    remat_policy,
    rotary,
    stack_blocks,
    unstack_blocks,
)
from diffax.nn.attention import MaskSpec

V_IN, V, MAX_LEN, DIM, HEADS = 6, 5, 16, 32, 2


def make(depth=2, **kw):
    kw = {"vocab_multiple": 8, "cond_dim": 16, **kw}
    return lambda rngs: DiffusionTransformer(V_IN, V, MAX_LEN, DIM, depth, HEADS, rngs=rngs, **kw)


class ModelDef:
    """A module split into its static graph and a pure dict of parameters (as training does)."""

    def __init__(self, build):
        abstract = nnx.eval_shape(lambda: build(nnx.Rngs(0)))
        self.graphdef, self.abstract_params = nnx.split(abstract, nnx.Param)
        self.treedef = jax.tree.structure(self.abstract_params)

    def module(self, params):
        state = jax.tree.unflatten(self.treedef, jax.tree.leaves(params))
        return nnx.merge(self.graphdef, state)


def random_params(mdef, seed=1):
    """NumPy-random parameters (generic: no zero-initialised gates), kernels N(0, 1/fan_in)."""
    rng = np.random.default_rng(seed)

    def fill(v):
        fan_in = int(np.prod(v.shape[:-1])) if len(v.shape) > 1 else 100
        return (rng.standard_normal(v.shape) / np.sqrt(fan_in)).astype(np.float32)

    return jax.tree.map(fill, nnx.to_pure_dict(mdef.abstract_params))


@pytest.fixture(scope="module")
def unrolled():
    mdef = ModelDef(make(scan_layers=False))
    return mdef, random_params(mdef)


@pytest.fixture(scope="module")
def reference(unrolled):
    """Loss and gradients of the unrolled model without remat."""
    mdef, params = unrolled
    return loss_fn(mdef)(params, TOKENS, T)


def logits_fn(mdef, **kw):
    return jax.jit(lambda p, x, t: mdef.module(p)(x, t, **kw))


def loss_fn(mdef, **kw):
    def loss(p, x, t):
        logits = mdef.module(p)(x, t, **kw)
        return jnp.mean(jax.nn.log_softmax(logits)[..., 0] * jnp.arange(x.shape[1]))

    return jax.jit(jax.value_and_grad(loss))


TOKENS = jnp.array([[0, 1, 2, 3, 4, 5, 0, 1, 3, 3], [5, 4, 3, 2, 1, 0, 1, 2, 2, 4]])
T = jnp.array([0.3, 0.8])


def test_shapes_bidirectional_and_time_conditioned(unrolled):
    mdef, params = unrolled
    fn = logits_fn(mdef)
    base = fn(params, TOKENS, T)
    assert base.shape == (2, 10, V) and base.dtype == jnp.float32
    changed = fn(params, TOKENS.at[0, -1].set(2), T)
    assert not np.allclose(base[0, 0], changed[0, 0])  # position 0 sees the last token
    assert not np.allclose(base, fn(params, TOKENS, jnp.array([0.7, 0.1])))
    np.testing.assert_allclose(fn(params, TOKENS, 0.3)[0], base[0], rtol=1e-5, atol=1e-6)


def test_time_free_mode_ignores_t():
    mdef = ModelDef(make(depth=1, time_conditioning=False))
    params = random_params(mdef)
    fn = logits_fn(mdef)
    np.testing.assert_array_equal(fn(params, TOKENS, T), fn(params, TOKENS, 1.0 - T))


def test_scanned_equals_unrolled_in_logits_and_gradients(unrolled, reference):
    mdef_u, params_u = unrolled
    mdef_s = ModelDef(make(scan_layers=True))
    params_s = stack_blocks(params_u)
    assert jax.tree.structure(params_s) == jax.tree.structure(random_params(mdef_s))
    np.testing.assert_allclose(
        logits_fn(mdef_s)(params_s, TOKENS, T),
        logits_fn(mdef_u)(params_u, TOKENS, T),
        rtol=1e-5,
        atol=1e-6,
    )
    loss_u, grads_u = reference
    loss_s, grads_s = loss_fn(mdef_s)(params_s, TOKENS, T)
    np.testing.assert_allclose(loss_s, loss_u, rtol=1e-5)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
        grads_s,
        stack_blocks(grads_u),
    )
    # The converters are inverse to each other.
    jax.tree.map(np.testing.assert_array_equal, unstack_blocks(params_s), params_u)


@pytest.mark.parametrize(
    "scan_layers, remat",
    [(True, "full"), (True, "dots_with_no_batch_dims_saveable"), (False, "full")],
)
def test_remat_gives_the_same_gradients(unrolled, reference, scan_layers, remat):
    _, params_u = unrolled
    mdef = ModelDef(make(scan_layers=scan_layers, remat=remat))
    params = stack_blocks(params_u) if scan_layers else params_u
    _, expected = reference
    _, grads = loss_fn(mdef)(params, TOKENS, T)
    if scan_layers:
        grads = unstack_blocks(grads)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), grads, expected
    )


def test_remat_policy_names():
    assert remat_policy("none") is None
    assert remat_policy("full") is jax.checkpoint_policies.nothing_saveable
    assert remat_policy("dots_saveable") is jax.checkpoint_policies.dots_saveable
    assert callable(remat_policy("offload_dots"))
    with pytest.raises(ValueError, match=r"model\.remat='sometimes'.*'dots_saveable'"):
        remat_policy("sometimes")


def test_features_times_head_weights_are_the_logits_with_padding_sliced(unrolled):
    mdef, params = unrolled
    assert params["head"]["kernel"].shape == (DIM, 8)  # 5 classes padded to a multiple of 8

    def both(p, x, t):
        module = mdef.module(p)
        h = module.features(x, t)
        kernel, bias = module.head_weights()
        return h, kernel, bias, module(x, t)

    h, kernel, bias, logits = jax.jit(both)(params, TOKENS, T)
    assert h.shape == (2, 10, DIM) and kernel.shape == (DIM, 8) and bias.shape == (8,)
    full = np.einsum("bld,dv->blv", np.float64(h), np.float64(kernel)) + np.float64(bias)
    assert logits.shape == (2, 10, V)
    np.testing.assert_allclose(logits, full[..., :V], rtol=1e-5, atol=1e-5)
    # At initialisation the whole head (so every padded column) is zero.
    build = make(depth=1)
    head = jax.jit(lambda: nnx.to_pure_dict(nnx.state(build(nnx.Rngs(0)), nnx.Param))["head"])()
    np.testing.assert_array_equal(head["kernel"], 0.0)
    np.testing.assert_array_equal(head["bias"], 0.0)


def test_packed_documents_match_each_document_alone():
    mdef = ModelDef(make(scan_layers=True))
    params = random_params(mdef, seed=3)
    doc_a, doc_b = TOKENS[0, :4], TOKENS[1, :6]
    packed = jnp.concatenate([doc_a, doc_b])[None]
    segment_ids = jnp.array([[0] * 4 + [1] * 6])
    t = jnp.array([0.4])
    out = logits_fn(mdef)
    jit_seg = jax.jit(lambda p, x, s, t: mdef.module(p)(x, t, segment_ids=s))
    got = jit_seg(params, packed, segment_ids, t)
    np.testing.assert_allclose(got[0, :4], out(params, doc_a[None], t)[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[0, 4:], out(params, doc_b[None], t)[0], rtol=1e-5, atol=1e-6)


def test_packed_documents_have_each_documents_own_masked_elbo_terms():
    """The loss side of packing: with segment ids (from EOS) the masked-ELBO terms of each
    document in a packed row equal those of the document alone (same x_0, x_t and t)."""
    import diffax.discrete as dd
    from diffax.discrete.losses import masked_elbo_terms
    from diffax.nn.attention import segment_ids_from_eos

    eos, mask = 4, V  # id 4 ends a document; the masked process's mask id is V = 5
    process = dd.Masked(V, dd.LinearSchedule())
    mdef = ModelDef(make(scan_layers=True))
    params = random_params(mdef, seed=5)
    x0_a, x0_b = jnp.array([0, 1, 2, eos]), jnp.array([3, 3, 1, 0, 2, eos])
    xt_a, xt_b = jnp.array([mask, 1, mask, eos]), jnp.array([3, mask, mask, 0, mask, mask])
    x0, xt = jnp.concatenate([x0_a, x0_b])[None], jnp.concatenate([xt_a, xt_b])[None]
    segments = segment_ids_from_eos(x0, eos)
    np.testing.assert_array_equal(segments, [[0] * 4 + [1] * 6])
    t = jnp.array([0.6])

    def terms(x0, xt, segment_ids=None):
        logits = mdef.module(params)(xt, t, segment_ids=segment_ids)
        return masked_elbo_terms(process, logits, x0, xt, t)[0]

    packed = terms(x0, xt, segments)
    np.testing.assert_allclose(packed[:4], terms(x0_a[None], xt_a[None]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(packed[4:], terms(x0_b[None], xt_b[None]), rtol=1e-5, atol=1e-6)
    # Without segment ids the documents see each other and the terms differ.
    assert not np.allclose(terms(x0, xt)[4:], packed[4:], rtol=1e-3)


def test_rotary_preserves_norm_and_relative_positions():
    q = jax.random.normal(jax.random.key(0), (1, 5, 1, 8))
    k = jax.random.normal(jax.random.key(1), (1, 5, 1, 8))
    rq, rk = rotary(q, jnp.arange(5)), rotary(k, jnp.arange(5))
    np.testing.assert_allclose(jnp.linalg.norm(rq, axis=-1), jnp.linalg.norm(q, axis=-1), rtol=1e-5)
    # <R_m q, R_n k> depends only on n - m: shifting both positions leaves it unchanged.
    sq, sk = rotary(q, jnp.arange(5) + 7), rotary(k, jnp.arange(5) + 7)
    np.testing.assert_allclose(
        jnp.einsum("blhd,bmhd->lm", rq, rk),
        jnp.einsum("blhd,bmhd->lm", sq, sk),
        rtol=1e-4,
        atol=1e-5,
    )
    # Per-example positions [B, L] rotate each row by its own positions.
    both = rotary(jnp.concatenate([q, k]), jnp.stack([jnp.arange(5), jnp.arange(5) + 7]))
    np.testing.assert_allclose(both, jnp.concatenate([rq, sk]), rtol=1e-6, atol=1e-6)


def test_hlo_size_does_not_grow_with_depth_when_scanned():
    def hlo_lines(depth):
        mdef = ModelDef(make(depth=depth, scan_layers=True, remat="full"))
        abstract = jax.tree.map(
            lambda v: jax.ShapeDtypeStruct(v.shape, v.dtype),
            nnx.to_pure_dict(mdef.abstract_params),
        )
        loss = jax.value_and_grad(lambda p, x, t: jnp.mean(mdef.module(p)(x, t)))
        return len(jax.jit(loss).lower(abstract, TOKENS, T).as_text().splitlines())

    assert hlo_lines(48) <= 1.2 * hlo_lines(12)


def test_param_shardings_on_a_2x2x2_mesh(unrolled):
    from diffax.training.mesh import make_mesh, param_shardings

    mdef = ModelDef(make(scan_layers=True))
    mesh = make_mesh({"data": 2, "fsdp": 2, "model": 2})
    rules = (("embed", "fsdp"), ("mlp", "model"), ("heads", "model"), ("vocab", "model"))
    shardings = nnx.to_pure_dict(param_shardings(mdef.abstract_params, rules, mesh))
    assert shardings["head"]["kernel"].spec == P("fsdp", "model")
    assert shardings["head"]["bias"].spec == P("model")
    blocks = shardings["blocks"]
    assert blocks["q"]["kernel"].spec == P(None, "fsdp", "model", None)
    assert blocks["proj"]["kernel"].spec == P(None, "model", None, "fsdp")
    assert blocks["fc1"]["kernel"].spec == P(None, "fsdp", "model")
    assert blocks["ada"]["kernel"].spec == P(None, None, None)  # adaLN replicated
    assert shardings["final_ada"]["kernel"].spec == P(None, None)
    # The sharded model computes the same logits as one device.
    _, params_u = unrolled
    params = stack_blocks(params_u)
    expected = logits_fn(mdef)(params, TOKENS, T)
    placed = jax.device_put(params, shardings)
    with jax.set_mesh(mesh):
        got = logits_fn(mdef)(placed, TOKENS, T)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_parameter_counts_by_role():
    depth, cond, mlp = 2, 16, 4 * DIM
    model = nnx.eval_shape(lambda: make(depth=depth)(nnx.Rngs(0)))
    counts = parameter_counts(model)
    embedding = V_IN * DIM + DIM * 8 + 8
    adaln = (cond * cond + cond) + (cond * cond + cond)
    adaln += depth * (cond * 6 * DIM + 6 * DIM) + cond * 2 * DIM + 2 * DIM
    body = depth * (4 * DIM * DIM + DIM + DIM * mlp + mlp + mlp * DIM + DIM)
    assert counts == {
        "total": embedding + adaln + body,
        "embedding": embedding,
        "adaln": adaln,
        "body": body,
    }
    _, params = nnx.split(model, nnx.Param)
    assert counts["total"] == sum(math.prod(v.shape) for v in jax.tree.leaves(params))
    assert parameter_counts(params) == counts
    unrolled = nnx.eval_shape(lambda: make(depth=depth, scan_layers=False)(nnx.Rngs(0)))
    assert parameter_counts(unrolled) == counts


def test_bad_arguments():
    build = lambda **kw: nnx.eval_shape(lambda: make(depth=1, **kw)(nnx.Rngs(0)))
    with pytest.raises(ValueError, match="divisible by num_heads"):
        nnx.eval_shape(lambda: DiffusionTransformer(6, 5, 12, 30, 1, 4, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match=r"model\.remat='some'"):
        build(remat="some")
    with pytest.raises(ValueError, match=r"model\.attention='flashy'"):
        build(attention="flashy")
    with pytest.raises(ValueError, match=r"model\.vocab_multiple"):
        build(vocab_multiple=0)
    with pytest.raises(ValueError, match=r"model\.cond_dim"):
        build(cond_dim=0)
    mdef = ModelDef(make(depth=1))
    module = mdef.module(random_params(mdef))
    with pytest.raises(ValueError, match=f"exceeds max_len={MAX_LEN}"):
        jax.eval_shape(module, jnp.zeros((1, MAX_LEN + 1), jnp.int32), jnp.zeros(1))
    with pytest.raises(ValueError, match="segment_ids must have the shape"):
        jax.eval_shape(
            lambda: module(jnp.zeros((1, 4), jnp.int32), 0.5, segment_ids=jnp.zeros((1, 3)))
        )
    with pytest.raises(TypeError, match="MaskSpec"):
        jax.eval_shape(lambda: module(jnp.zeros((1, 4), jnp.int32), 0.5, mask="causal"))


@pytest.mark.parametrize("scan_layers", [True, False])
def test_runs_inside_a_lax_loop_when_built_outside(scan_layers):
    # Samplers call a model rebuilt once outside their `fori_loop` / `scan`.
    mdef = ModelDef(make(depth=2, scan_layers=scan_layers, remat="full"))

    def sample_like(params):
        module = mdef.module(params)
        step = lambda i, acc: acc + module(TOKENS, T)
        return jax.lax.fori_loop(0, 2, step, jnp.zeros((*TOKENS.shape, V)))

    out = jax.eval_shape(sample_like, mdef.abstract_params)
    assert out.shape == (*TOKENS.shape, V)


def test_bfloat16_compute_feeds_bfloat16_to_attention(monkeypatch):
    import diffax.nn.transformer as transformer

    seen, attend = [], transformer.attend

    def spy(q, k, v, **kw):
        seen.append((q.dtype, k.dtype, v.dtype, kw["implementation"], kw["mask"]))
        return attend(q, k, v, **kw)

    monkeypatch.setattr(transformer, "attend", spy)
    mdef = ModelDef(make(depth=2, dtype=jnp.bfloat16, attention="xla"))
    mask = MaskSpec("block_causal", 2)
    out = jax.eval_shape(lambda p: mdef.module(p)(TOKENS, T, mask=mask), mdef.abstract_params)
    assert out.dtype == jnp.float32 and out.shape == (*TOKENS.shape, V)
    assert seen == [(jnp.bfloat16, jnp.bfloat16, jnp.bfloat16, "xla", mask)]  # one scanned body


# ---- per-token times and the key/value cache ------------------------------------------------


def test_per_token_times_condition_each_position(unrolled):
    mdef, params = unrolled
    fn = logits_fn(mdef)
    block_causal = logits_fn(mdef, mask=MaskSpec("block_causal", 2))
    per_row = jnp.broadcast_to(T[:, None], TOKENS.shape)
    np.testing.assert_allclose(fn(params, TOKENS, per_row), fn(params, TOKENS, T), atol=2e-6)
    # Block 0 sees only itself: its rows depend only on its own times.
    t_tok = per_row.at[:, 2:].set(jnp.array([[0.9], [0.05]]))
    mixed = block_causal(params, TOKENS, t_tok)
    np.testing.assert_allclose(mixed[:, :2], block_causal(params, TOKENS, T)[:, :2], atol=2e-6)
    assert not np.allclose(mixed[:, 2:], block_causal(params, TOKENS, T)[:, 2:], atol=1e-3)
    # The last position's time reaches its own block only.
    moved = block_causal(params, TOKENS, per_row.at[:, -1].set(0.5))
    base = block_causal(params, TOKENS, per_row)
    np.testing.assert_allclose(moved[:, :-2], base[:, :-2], atol=1e-6)
    assert not np.allclose(moved[:, -2:], base[:, -2:], atol=1e-3)


def test_per_token_times_are_ignored_without_time_conditioning():
    mdef = ModelDef(make(depth=1, time_conditioning=False))
    params = random_params(mdef)
    fn = logits_fn(mdef)
    t_tok = jax.random.uniform(jax.random.key(0), TOKENS.shape)
    np.testing.assert_array_equal(fn(params, TOKENS, t_tok), fn(params, TOKENS, 0.0))


def test_time_shape_errors_name_t(unrolled):
    mdef, params = unrolled
    module = mdef.module(params)
    for bad in (jnp.zeros((2, 3)), jnp.zeros((3,)), jnp.zeros((2, 10, 1))):
        with pytest.raises(ValueError, match=r"t must be a scalar, \[B\]"):
            jax.eval_shape(lambda t, bad=bad: module(TOKENS, bad), 0.0)


@pytest.fixture(scope="module")
def scanned():
    mdef = ModelDef(make(scan_layers=True))
    return mdef, random_params(mdef, seed=2)


def _cached_fn(mdef):
    return jax.jit(
        lambda p, x, t, cache, start, limit: mdef.module(p).forward_cached(
            x, t, cache, start, limit=limit
        )
    )


@pytest.mark.parametrize("layout", ["unrolled", "scanned"])
def test_forward_cached_over_the_whole_sequence_is_the_plain_forward(layout, request):
    mdef, params = request.getfixturevalue(layout)
    module = mdef.module(params)
    cache = module.init_cache(2, TOKENS.shape[1])
    assert cache.k.shape == (2, 2, 10, HEADS, DIM // HEADS) and cache.k.dtype == jnp.float32
    reference = logits_fn(mdef)(params, TOKENS, T)
    # The backend path (start = 0, Q = S, no limit) and the dense masked path (traced limit).
    full, new_cache = jax.jit(lambda p, c: mdef.module(p).forward_cached(TOKENS, T, c, 0))(
        params, cache
    )
    dense, dense_cache = _cached_fn(mdef)(params, TOKENS, T, cache, 0, 10)
    np.testing.assert_allclose(full, reference, rtol=1e-5, atol=2e-6)
    np.testing.assert_allclose(dense, reference, rtol=1e-5, atol=2e-6)
    np.testing.assert_allclose(new_cache.k, dense_cache.k, rtol=1e-6, atol=1e-6)
    assert float(jnp.min(jnp.abs(new_cache.v).sum(-1))) > 0  # every position was written


@pytest.mark.parametrize("layout", ["unrolled", "scanned"])
def test_forward_cached_block_by_block_is_block_causal(layout, request):
    """Blocks appended in order (limit = block end) give the rows of the block-causal model."""
    mdef, params = request.getfixturevalue(layout)
    k, length = 2, TOKENS.shape[1]
    t_tok = jax.random.uniform(jax.random.key(3), TOKENS.shape)
    reference = logits_fn(mdef, mask=MaskSpec("block_causal", k))(params, TOKENS, t_tok)
    step = _cached_fn(mdef)
    cache, rows = mdef.module(params).init_cache(2, length), []
    for start in range(0, length, k):
        sl = slice(start, start + k)
        out, cache = step(params, TOKENS[:, sl], t_tok[:, sl], cache, start, start + k)
        rows.append(out)
    np.testing.assert_allclose(jnp.concatenate(rows, 1), reference, rtol=1e-5, atol=2e-6)
    # A later query of block 2 against the finished cache: same rows (per-query limits).
    out, _ = step(params, TOKENS[:, 4:6], t_tok[:, 4:6], cache, 4, jnp.array([6, 6]))
    np.testing.assert_allclose(out, reference[:, 4:6], rtol=1e-5, atol=2e-6)


def test_forward_cached_bad_arguments(unrolled):
    mdef, params = unrolled
    module = mdef.module(params)
    with pytest.raises(ValueError, match=f"max_len={MAX_LEN}"):
        module.init_cache(2, MAX_LEN + 1)
    cache = module.init_cache(2, 4)
    with pytest.raises(ValueError, match="more than the cache"):
        jax.eval_shape(lambda: module.forward_cached(TOKENS, T, cache, 0))
    with pytest.raises(ValueError, match="limit must be"):
        jax.eval_shape(lambda: module.forward_cached(TOKENS[:, :2], T, cache, 0, limit=jnp.ones(3)))
    with pytest.raises(ValueError, match="cache must have shape"):
        jax.eval_shape(lambda: module.forward_cached(TOKENS[:1, :2], T[:1], cache, 0))
    with pytest.raises(TypeError, match="KVCache"):
        jax.eval_shape(lambda: module.forward_cached(TOKENS[:, :2], T, (cache.k, cache.v), 0))
