"""Block diffusion task (BD3-LM): loss, evaluation and decoding against independent references."""

import importlib
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import diffax.discrete as dd
from diffax.nn.attention import MaskSpec
from diffax.training.tasks import TextDiffusionTask
from diffax.training.tasks.block_text import BlockDiffusionTask, segmented_two_stream_fn
from diffax.training.validate import validate_config
from tests.training.helpers import tiny_config

B = 4


def _config(**overrides):
    overrides = {"discrete.block_size": 4, "train.loss_vocab_chunk": 0, **overrides}
    return tiny_config(**overrides)


def _random_params(task, seed=0, scale=0.5):
    """Random parameters (zero-initialised heads and adaLN would hide most of the network)."""
    leaves, treedef = jax.tree.flatten(nnx.to_pure_dict(task.model_def.abstract_params))
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    values = [scale * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys, strict=True)]
    return jax.tree.unflatten(treedef, values)


def _batch(task, seed=1):
    return jax.random.randint(jax.random.key(seed), (B, task.seq_len), 0, task.vocab_size)


@pytest.mark.parametrize("time_conditioning", [False, True])
def test_loss_equals_block_elbo_of_separate_block_causal_calls(time_conditioning):
    """The one-pass two-stream loss = the block NELBO with one block-causal call per block."""
    task = BlockDiffusionTask(_config(**{"model.time_conditioning": time_conditioning}))
    params, batch, key = _random_params(task), _batch(task), jax.random.key(2)
    k = task.block_size

    def block_causal(tokens, t):  # [B, L] tokens, per-token [B, L] times
        module = task.model_def.module(params)
        return module(tokens, t, mask=MaskSpec("block_causal", k))

    reference = dd.per_block_two_stream(block_causal, k)
    loss, metrics = jax.jit(task.loss)(params, key, batch)
    want = dd.block_masked_elbo(key, task.process, reference, batch, block_size=k)
    np.testing.assert_allclose(loss, jnp.mean(want) / task.seq_len, rtol=2e-5)
    np.testing.assert_allclose(metrics["bits_per_char"], loss / math.log(2.0), rtol=1e-6)
    assert float(loss) > 0.5  # random logits: a real loss, not a degenerate zero


@pytest.mark.parametrize("time_conditioning", [False, True])
def test_one_block_equals_the_parents_masked_elbo(time_conditioning):
    """block_size = seq_len: the noisy stream sees x_t only, so the loss is `masked_elbo`."""
    changes = {"model.time_conditioning": time_conditioning}
    task = BlockDiffusionTask(_config(**{"discrete.block_size": 16, **changes}))
    parent = TextDiffusionTask(_config(**{"discrete.block_size": 0, **changes}))
    params, batch = _random_params(task), _batch(task)
    for seed in range(2):
        key = jax.random.key(seed)
        got = jax.jit(task.loss)(params, key, batch)[0]
        want = jax.jit(parent.loss)(params, key, batch)[0]
        np.testing.assert_allclose(got, want, rtol=2e-5)


def test_vocab_chunked_loss_and_eval_equal_full_logits():
    chunked = BlockDiffusionTask(_config(**{"train.loss_vocab_chunk": 8}))  # 4 chunks of 27
    full = BlockDiffusionTask(_config())
    params, batch, key = _random_params(full), _batch(full), jax.random.key(2)
    assert chunked.chunked_eval

    @jax.jit
    def run(p):
        return [
            (task.loss(p, key, batch)[0], task.eval_nats(p, key, batch, 2))
            for task in (chunked, full)
        ]

    (loss, nats), (want_loss, want_nats) = run(params)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
    np.testing.assert_allclose(nats, want_nats, rtol=1e-5)


def test_clipped_training_times_change_the_loss_not_the_eval():
    """t ~ U[t_min, t_max] in training; evaluation ignores the clipping (the NELBO on [0, 1])."""
    clipped = BlockDiffusionTask(_config(**{"discrete.t_min": 0.3, "discrete.t_max": 0.8}))
    full = BlockDiffusionTask(_config())
    params, batch, key = _random_params(full), _batch(full), jax.random.key(3)
    k = full.block_size
    fn = full.two_stream(params)
    t = 0.3 + 0.5 * dd.blocks.block_times(jax.random.split(key, 3)[0], B, 16 // k)
    want = dd.block_masked_elbo(key, full.process, fn, batch, t, block_size=k)
    got = jax.jit(clipped.loss)(params, key, batch)[0]
    np.testing.assert_allclose(got, jnp.mean(want) / full.seq_len, rtol=2e-5)
    eval_clipped = jax.jit(lambda p: clipped.eval_nats(p, key, batch, 2))(params)
    eval_full = jax.jit(lambda p: full.eval_nats(p, key, batch, 2))(params)
    np.testing.assert_allclose(eval_clipped, eval_full, rtol=1e-6)


def _exact_block_nelbo(task, params, x0):
    """The block NELBO of a time-free network by enumerating every mask pattern of every block.

    Linear schedule, alpha(t) = 1 - t, weight 1 / t: a pattern m with |m| masked tokens of a
    K-token block has probability t^|m| (1 - t)^(K - |m|), so the time integral is the Beta
    function B(|m|, K - |m| + 1).
    """
    k, length = task.block_size, task.seq_len
    fn = task.two_stream(params)
    mask_id = task.process.mask_id
    total = np.zeros(x0.shape[0])
    for b in range(length // k):
        for pattern in itertools.product([0, 1], repeat=k):
            m = sum(pattern)
            if m == 0:
                continue
            hide = np.zeros(length, bool)
            hide[b * k : (b + 1) * k] = pattern
            xt = jnp.where(hide[None, :], mask_id, x0)
            logits = fn(jnp.concatenate([xt, x0], axis=1), jnp.zeros((x0.shape[0], length // k)))
            nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), x0[..., None], -1)[..., 0]
            beta = math.gamma(m) * math.gamma(k - m + 1) / math.gamma(k + 1)
            total += beta * np.asarray(jnp.sum(jnp.where(hide[None, :], nll, 0.0), axis=1))
    return total


def test_eval_is_an_unbiased_estimate_of_the_exact_block_nelbo():
    task = BlockDiffusionTask(
        _config(
            **{
                "data.seq_len": 4,
                "discrete.block_size": 2,
                "model.time_conditioning": False,
                "sample.num_steps": 2,
            }
        )
    )
    params, x0 = _random_params(task, scale=0.3), _batch(task)[:2]
    exact = _exact_block_nelbo(task, params, x0)
    n = 4000
    draws = jax.jit(lambda k: task.eval_nats(params, k, x0, n))
    # Per-draw spread from a separate call, for the Monte-Carlo error of the mean of n draws.
    one = jax.jit(jax.vmap(lambda k: task.eval_nats(params, k, x0, 1)))
    single = np.asarray(one(jax.random.split(jax.random.key(8), 256)))
    got = np.asarray(draws(jax.random.key(7)))
    stderr = single.std(axis=0) / math.sqrt(n)
    assert np.all(np.abs(got - exact) < 5 * stderr + 1e-3), (got, exact, stderr)


def test_packed_documents_are_independent_in_the_two_stream_pass():
    """With segment ids, a document's rows are those of the same document alone at position 0."""
    task = BlockDiffusionTask(_config())
    params = _random_params(task)
    module = task.model_def.module(params)
    x0 = _batch(task)
    xt = jnp.where(jax.random.bernoulli(jax.random.key(5), 0.5, x0.shape), task.process.mask_id, x0)
    t = jax.random.uniform(jax.random.key(6), (B, 4))
    segments = jnp.repeat(jnp.arange(2)[None, :], 8, axis=1).reshape(1, 16)  # two docs of 8
    segments = jnp.broadcast_to(jnp.sort(segments, axis=1), (B, 16))
    packed = segmented_two_stream_fn(module, 4, segments, 0)(jnp.concatenate([xt, x0], 1), t)
    # Document 2 (positions 8..15, blocks 2 and 3) alone, as the first half of a row.
    alone_xt = jnp.concatenate([xt[:, 8:], xt[:, 8:]], axis=1)
    alone_x0 = jnp.concatenate([x0[:, 8:], x0[:, 8:]], axis=1)
    alone_t = jnp.concatenate([t[:, 2:], t[:, 2:]], axis=1)
    alone = task.two_stream(params)(jnp.concatenate([alone_xt, alone_x0], 1), alone_t)
    np.testing.assert_allclose(packed[:, 8:], alone[:, :8], rtol=1e-4, atol=1e-5)
    # One segment everywhere is the plain two-stream pass.
    one = segmented_two_stream_fn(module, 4, jnp.zeros((B, 16), jnp.int32), 0)
    np.testing.assert_allclose(
        one(jnp.concatenate([xt, x0], 1), t),
        task.two_stream(params)(jnp.concatenate([xt, x0], 1), t),
        rtol=1e-5,
        atol=1e-6,
    )


@pytest.mark.parametrize("sampler", ["ancestral", "confidence"])
def test_cached_and_uncached_sampling_draw_the_same_tokens(sampler):
    common = {"sample.sampler": sampler, "sample.num_steps": 8, "model.time_conditioning": True}
    cached = BlockDiffusionTask(_config(**common, **{"sample.kv_cache": "exact"}))
    uncached = BlockDiffusionTask(_config(**common, **{"sample.kv_cache": "none"}))
    params, key = _random_params(cached), jax.random.key(4)
    tokens, info = jax.jit(lambda p: cached.sample(p, key, 3))(params)
    ref, ref_info = jax.jit(lambda p: uncached.sample(p, key, 3))(params)
    np.testing.assert_array_equal(tokens, ref)
    assert tokens.shape == (3, 16) and int(info["num_blocks"]) == 4
    # 4 blocks x 2 steps + 4 appends (cached) vs 4 x 2 full-length calls (uncached).
    assert int(info["nfe"]) == 12 and int(ref_info["nfe"]) == 8
    assert int(info["token_evals"]) == 12 * 4 and int(ref_info["token_evals"]) == 8 * 16
    np.testing.assert_array_equal(info["lengths"], [16, 16, 16])


def test_eos_stops_generation_and_max_length_shortens_it():
    task = BlockDiffusionTask(
        _config(**{"sample.eos_id": 0, "sample.max_length": 12, "sample.num_steps": 6})
    )
    params = _random_params(task, scale=0.0)  # zero logits: every token equally likely
    tokens, info = jax.jit(lambda p: task.sample(p, jax.random.key(0), 16))(params)
    tokens, lengths = np.asarray(tokens), np.asarray(info["lengths"])
    assert tokens.shape == (16, 12)
    for row, n in zip(tokens, lengths, strict=True):
        eos = np.flatnonzero(row == 0)
        if n < 12:  # stopped at its first EOS, padded with EOS after it
            assert eos[0] == n - 1 and np.all(row[n:] == 0)
        else:
            assert eos.size == 0 or eos[0] == 11


def test_a_few_training_steps_lower_the_loss_and_eval_and_sample_run():
    task = BlockDiffusionTask(_config(**{"model.time_conditioning": False}))
    params = task.init_params()
    batches = task.source.eval_batches(16, 1)[0]
    tx = optax.adam(5e-3)
    opt = tx.init(params)

    @jax.jit
    def step(params, opt, key):
        (loss, _), grads = jax.value_and_grad(task.loss, has_aux=True)(params, key, batches)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt, loss

    before = float(jnp.mean(task.eval_nats(params, jax.random.key(9), batches, 2)))
    for i in range(20):
        params, opt, _ = step(params, opt, jax.random.key(i))
    after = float(jnp.mean(task.eval_nats(params, jax.random.key(9), batches, 2)))
    # The initial network predicts uniformly over 27 characters: log(27) nats per token in
    # expectation (the estimate has Monte-Carlo noise in the masks and times).
    np.testing.assert_allclose(before / task.seq_len, math.log(27), rtol=0.05)
    assert after < 0.9 * before
    tokens, info = jax.jit(lambda p: task.sample(p, jax.random.key(0), 4))(params)
    assert tokens.shape == (4, 16) and int(jnp.min(tokens)) >= 0 and int(info["nfe"]) > 0


@pytest.mark.parametrize(
    "changes, key",
    [
        ({"discrete.block_size": 5}, "discrete.block_size"),
        ({"process.name": "uniform", "train.loss": "score_entropy"}, "process.name"),
        ({"train.loss": "ctmc_elbo"}, "train.loss"),
        ({"discrete.t_min": 0.8, "discrete.t_max": 0.3}, "discrete.t_min"),
        ({"sample.kv_cache": "dual"}, "sample.kv_cache"),
        ({"sample.num_steps": 6}, "sample.num_steps"),
        ({"sample.max_length": 10}, "sample.max_length"),
        ({"sample.eos_id": 99}, "sample.eos_id"),
        ({"discrete.cond_prefix": 2}, "discrete.cond_prefix"),
    ],
)
def test_bad_settings_name_the_config_key(changes, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        BlockDiffusionTask(_config(**changes))


@pytest.mark.parametrize("name", ["bd3lm_small", "bd3lm_markov", "bd3lm_owt"])
def test_block_configs_load_validate_and_build(name):
    config = importlib.import_module(f"configs.{name}").get_config()
    validate_config(config)
    assert config.task == "text_diffusion" and config.discrete.block_size > 0
    if name == "bd3lm_owt":  # launch-sized: needs the prepared shards
        with pytest.raises(ValueError, match="data.path"):
            BlockDiffusionTask(config)
        return
    task = BlockDiffusionTask(config)
    assert task.seq_len % task.block_size == 0
    assert task.steps_per_block * (task.seq_len // task.block_size) == config.sample.num_steps
