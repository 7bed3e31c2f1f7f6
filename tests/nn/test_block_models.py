"""Block diffusion adapters of the transformer: two-stream pass, BD3 KV cache, Fast-dLLM cache."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import diffax.discrete as dd
from diffax.core.cross_entropy import head_logits
from diffax.discrete.blocks.models import per_block_two_stream, uncached_block_model
from diffax.nn import DiffusionTransformer, bd3_block_model, fast_dllm_model, two_stream_fn
from diffax.nn.attention import MaskSpec

V, MAX_LEN, DIM, HEADS = 5, 32, 32, 2
MASK_ID = V  # the masked process's mask id: the network reads V + 1 ids
L, B = 8, 2


def build(time_conditioning=True, scan_layers=True, max_len=MAX_LEN, seed=1):
    """A tiny transformer with NumPy-random parameters (no zero-initialised gates or head)."""
    make = lambda rngs: DiffusionTransformer(
        V + 1,
        V,
        max_len,
        DIM,
        2,
        HEADS,
        rngs=rngs,
        cond_dim=16,
        vocab_multiple=8,
        time_conditioning=time_conditioning,
        scan_layers=scan_layers,
    )
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: make(nnx.Rngs(0))), nnx.Param)
    rng = np.random.default_rng(seed)

    def fill(v):
        fan_in = int(np.prod(v.shape[:-1])) if len(v.shape) > 1 else 100
        return jnp.asarray(rng.standard_normal(v.shape) / np.sqrt(fan_in), jnp.float32)

    params = jax.tree.map(fill, nnx.to_pure_dict(abstract))
    state = jax.tree.unflatten(jax.tree.structure(abstract), jax.tree.leaves(params))
    return nnx.merge(graphdef, state)


@pytest.fixture(scope="module")
def model():
    return build()


def block_causal_fn(model, k):
    return lambda x, t: model(x, t, mask=MaskSpec("block_causal", k))


def random_pair(seed, batch=B, length=L):
    """`(x_t, x_0)`: clean tokens and a copy with about half of them masked."""
    k1, k2 = jax.random.split(jax.random.key(seed))
    x0 = jax.random.randint(k1, (batch, length), 0, V)
    xt = jnp.where(jax.random.bernoulli(k2, 0.5, x0.shape), MASK_ID, x0)
    return xt, x0


@pytest.mark.parametrize(
    ("k", "length", "time_conditioning"), [(1, 4, True), (2, L, True), (L, L, True), (2, L, False)]
)
def test_two_stream_pass_equals_one_block_causal_pass_per_block(
    model, k, length, time_conditioning
):
    net = model if time_conditioning else build(time_conditioning=False)
    xt, x0 = random_pair(0, length=length)
    tokens = jnp.concatenate([xt, x0], axis=1)
    t = jax.random.uniform(jax.random.key(1), (B, length // k))
    reference = jax.jit(per_block_two_stream(block_causal_fn(net, k), k))(tokens, t)
    logits = jax.jit(two_stream_fn(net, k))(tokens, t)
    assert logits.shape == (B, length, V)
    np.testing.assert_allclose(logits, reference, rtol=1e-5, atol=3e-6)
    head = jax.jit(two_stream_fn(net, k, head=True, chunk_size=4))(tokens, t)
    assert head.hidden.shape == (B, length, DIM) and head.chunk_size == 4
    np.testing.assert_allclose(head_logits(head, V), reference, rtol=1e-5, atol=3e-6)


def test_two_stream_needs_max_len_of_one_stream_and_one_time_per_row():
    net = build(max_len=L)
    xt, x0 = random_pair(2)
    tokens = jnp.concatenate([xt, x0], axis=1)
    fn = jax.jit(two_stream_fn(net, 4))
    np.testing.assert_allclose(
        fn(tokens, jnp.array([0.3, 0.6])),
        fn(tokens, jnp.array([[0.3, 0.3], [0.6, 0.6]])),
        atol=1e-6,
    )


def test_two_stream_trains_with_the_block_elbo(model):
    """The adapter plugs into `block_masked_elbo` (logits and LinearHead give the same loss)."""
    _, x0 = random_pair(3)
    process = dd.Masked(V)
    loss = lambda fn: dd.block_masked_elbo(jax.random.key(4), process, fn, x0, block_size=2)
    by_logits = jax.jit(lambda: loss(two_stream_fn(model, 2)))()
    by_head = jax.jit(lambda: loss(two_stream_fn(model, 2, head=True)))()
    reference = jax.jit(lambda: loss(per_block_two_stream(block_causal_fn(model, 2), 2)))()
    assert by_logits.shape == (B,) and bool(jnp.all(jnp.isfinite(by_logits)))
    np.testing.assert_allclose(by_logits, reference, rtol=1e-5)
    np.testing.assert_allclose(by_head, reference, rtol=1e-5)


@pytest.mark.parametrize("scan_layers", [True, False])
def test_bd3_cache_denoises_every_block_as_the_uncached_model(model, scan_layers):
    net = model if scan_layers else build(scan_layers=False)
    k = 2
    xt, x0 = random_pair(5)
    t = jnp.array([0.7, 0.2])
    cached, uncached = (
        bd3_block_model(net, k),
        uncached_block_model(block_causal_fn(net, k), MASK_ID),
    )
    c_denoise, c_append = jax.jit(cached.denoise), jax.jit(cached.append)
    u_denoise = jax.jit(uncached.denoise)
    cache, tokens = cached.init(B, L), uncached.init(B, L)
    for start in range(0, L, k):
        block = xt[:, start : start + k]
        got = c_denoise(cache, block, t, start)
        want = u_denoise(tokens, block, t, start)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=3e-6)
        cache = c_append(cache, x0[:, start : start + k], start)
        tokens = uncached.append(tokens, x0[:, start : start + k], start)
    # A prompt of two blocks appended at once fills the cache as two appends do.
    one_by_one = c_append(c_append(cached.init(B, L), x0[:, :2], 0), x0[:, 2:4], 2)
    at_once = jax.jit(cached.append)(cached.init(B, L), x0[:, :4], 0)
    np.testing.assert_allclose(at_once.k[:, :, :4], one_by_one.k[:, :, :4], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(at_once.v[:, :, :4], one_by_one.v[:, :, :4], rtol=1e-5, atol=1e-6)


def test_fast_dllm_cache_is_exact_where_nothing_changed(model):
    xt, x0 = random_pair(6)
    t = jnp.array([0.4, 0.9])
    cached = fast_dllm_model(model)
    reference = jax.jit(model)
    logits, cache = jax.jit(cached.refresh)(xt, t)
    np.testing.assert_allclose(logits, reference(xt, t), rtol=1e-5, atol=3e-6)
    window = jax.jit(cached.window)
    # A window over the whole sequence recomputes everything: the plain forward of new tokens.
    np.testing.assert_allclose(window(cache, x0, t, 0), reference(x0, t), rtol=1e-5, atol=3e-6)
    # A window over an unchanged sequence: those rows of the plain forward.
    np.testing.assert_allclose(
        window(cache, xt[:, 2:6], t, 2), reference(xt, t)[:, 2:6], rtol=1e-5, atol=3e-6
    )
    # A changed window sees its own fresh keys and the stale ones elsewhere.
    new = xt.at[:, 2:6].set(x0[:, 2:6])
    stale = window(cache, new[:, 2:6], t, 2)
    full = jax.jit(full_rows_with_stale_cache, static_argnums=(0, 4, 5))(model, xt, new, t, 2, 6)
    assert not np.allclose(stale, reference(new, t)[:, 2:6], atol=1e-3)  # stale, not exact
    np.testing.assert_allclose(stale, full, rtol=1e-5, atol=3e-6)


def full_rows_with_stale_cache(model, old, new, t, start, stop):
    """Window rows recomputed layer by layer: keys/values of `old` outside the window, fresh ones
    of `new` inside it, plain softmax attention over all positions."""
    from diffax.nn import transformer as tr

    batch, width = old.shape[0], stop - start
    cache = model.init_cache(batch, old.shape[1])
    _, cache = model.forward_cached(old, t, cache, 0)
    x = model.embed(new[:, start:stop])
    c = model._condition(t, batch, width)
    positions = start + jnp.arange(width)
    graphdef, state = nnx.split(model.blocks)
    for i in range(model.depth):
        block = nnx.merge(graphdef, jax.tree.map(lambda a, i=i: a[i], state))
        shift1, scale1, gate1, shift2, scale2, gate2 = jnp.split(block.ada(c), 6, axis=-1)
        h = tr._modulate(tr.layer_norm(x), shift1, scale1)
        q = tr.rotary(block.q(h), positions)
        k_all = cache.k[i].at[:, start:stop].set(tr.rotary(block.k(h), positions))
        v_all = cache.v[i].at[:, start:stop].set(block.v(h))
        scores = jnp.einsum("bqhd,bshd->bhqs", q, k_all) / np.sqrt(q.shape[-1])
        out = jnp.einsum("bhqs,bshd->bqhd", jax.nn.softmax(scores, -1), v_all)
        x = x + gate1[:, None] * block.proj(out)
        h = tr._modulate(tr.layer_norm(x), shift2, scale2)
        x = x + gate2[:, None] * block.fc2(jax.nn.gelu(block.fc1(h)))
    return model._logits(model._output(x, c))


@pytest.mark.parametrize("sampler", ["ancestral", "confidence"])
def test_block_sample_with_the_kv_cache_draws_the_uncached_tokens(model, sampler):
    """The key test of issue 10: BD3 decoding with and without the cache, same key, same tokens.

    One prompt token per row: in an all-mask first block every position would have the same
    logits (identical inputs, rotary positions only), and confidence ranks of exact ties are
    decided by rounding, which differs between two equal computations.
    """
    length, k, batch = 32, 8, 4
    process = dd.Masked(V)
    prompt = jnp.zeros((batch, length), jnp.int32).at[:, 0].set(jnp.arange(batch) % V)
    prompt_mask = jnp.zeros((batch, length), bool).at[:, 0].set(True)
    models = {
        "cached": bd3_block_model(model, k),
        "uncached": uncached_block_model(block_causal_fn(model, k), process.mask_id),
    }
    out = {
        name: jax.jit(
            lambda key, m=m: dd.block_sample(
                key,
                process,
                m,
                (batch, length),
                block_size=k,
                steps_per_block=4,
                sampler=sampler,
                fixed_tokens=prompt,
                fixed_mask=prompt_mask,
            )
        )(jax.random.key(7))
        for name, m in models.items()
    }
    (cached, info_c), (uncached, info_u) = out["cached"], out["uncached"]
    np.testing.assert_array_equal(cached, uncached)
    assert cached.shape == (batch, length) and bool(jnp.all((cached >= 0) & (cached < V)))
    np.testing.assert_array_equal(cached[:, 0], jnp.arange(batch) % V)
    assert len(np.unique(np.asarray(cached))) > 1  # a non-uniform, non-constant model
    assert int(info_c["token_evals"]) < int(info_u["token_evals"])
    assert int(info_c["num_blocks"]) == int(info_u["num_blocks"]) == length // k


def test_adapters_reject_bad_arguments(model):
    with pytest.raises(TypeError, match="DiffusionTransformer"):
        two_stream_fn(lambda x, t: x, 2)
    with pytest.raises(ValueError, match="block_size"):
        bd3_block_model(model, 0)
    with pytest.raises(ValueError, match="chunk_size"):
        two_stream_fn(model, 2, head=True, chunk_size=0)
    fn = two_stream_fn(model, 3)
    with pytest.raises(ValueError, match="block_size=3 must divide"):
        jax.eval_shape(fn, jnp.zeros((B, 2 * L), jnp.int32), jnp.zeros((B, 2)))
    with pytest.raises(ValueError, match=r"t must have shape \[B, L // block_size\]"):
        jax.eval_shape(two_stream_fn(model, 2), jnp.zeros((B, 2 * L), jnp.int32), jnp.zeros((B, 3)))
    with pytest.raises(ValueError, match="two-stream"):
        jax.eval_shape(two_stream_fn(model, 2), jnp.zeros((B, 7), jnp.int32), jnp.zeros((B,)))
    with pytest.raises(ValueError, match="block_size=3 must divide"):
        bd3_block_model(model, 3).init(B, L)
