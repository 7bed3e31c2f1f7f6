"""Prefix-conditioned text diffusion: conditional loss, condition dropout, guided sampling."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffax.discrete as dd
from diffax import training
from diffax.training.tasks import build_task
from tests.training.helpers import tiny_config

P = 4  # prefix tokens of the length-16 tiny windows


def prefix_config(**overrides):
    return tiny_config(**{"discrete.cond_prefix": P, "discrete.cond_dropout": 0.5, **overrides})


def random_params(task, seed=0):
    """Initial parameters plus noise: the zero-initialised output layers would make the
    network ignore its input."""
    params = task.init_params()
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    noisy = [
        x + 0.2 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys, strict=True)
    ]
    return jax.tree.unflatten(tree, noisy)


@pytest.fixture(scope="module")
def task_and_params():
    task = build_task(prefix_config())
    return task, random_params(task)


def held_out(task, num=8):
    return jnp.asarray(task.source.eval_batches(num, 1)[0])


def test_loss_and_eval_cover_the_continuation_only(task_and_params):
    task, params = task_and_params
    batch = held_out(task)
    loss, metrics = jax.jit(task.loss)(params, jax.random.key(0), batch)
    assert np.isfinite(float(loss)) and "bits_per_char" in metrics
    assert task.tokens_per_example() == 16 - P
    nats = task.eval_nats(params, jax.random.key(1), batch, 2)
    assert nats.shape == (8,) and np.all(np.isfinite(np.asarray(nats)))
    # The eval ELBO conditions on the prefix: changing it changes the continuation's bound...
    other = batch.at[:, :P].set((batch[:, :P] + 1) % task.vocab_size)
    assert not np.allclose(nats, task.eval_nats(params, jax.random.key(1), other, 2))


def test_dropped_prefix_is_neither_seen_nor_scored():
    # With cond_dropout = 1 every prefix is masked in the input and out of the loss, so the loss
    # cannot depend on the prefix values at all (same key: same times and masks).
    task = build_task(prefix_config(**{"discrete.cond_dropout": 1.0}))
    params = random_params(task)
    batch = held_out(task)
    other = batch.at[:, :P].set((batch[:, :P] + 3) % task.vocab_size)
    loss = jax.jit(task.loss)
    a, b = loss(params, jax.random.key(2), batch)[0], loss(params, jax.random.key(2), other)[0]
    assert float(a) == float(b)
    # Without dropout the network sees the clean prefix: the loss changes with it.
    task0 = build_task(prefix_config(**{"discrete.cond_dropout": 0.0}))
    loss0 = jax.jit(task0.loss)
    assert float(loss0(params, jax.random.key(2), batch)[0]) != float(
        loss0(params, jax.random.key(2), other)[0]
    )


def test_prefix_is_never_noised_in_training(task_and_params):
    task, params = task_and_params
    seen = []

    def spy(tokens, t):
        seen.append(tokens)
        return jnp.zeros(tokens.shape + (task.vocab_size,))

    batch = held_out(task)
    drop = jnp.array([True, False] * 4)
    fn = task.continuation_fn(spy, batch[:, :P], drop)
    out = fn(jnp.full((8, 16 - P), task.process.mask_id, jnp.int32), jnp.full((8,), 0.5))
    assert out.shape == (8, 16 - P, task.vocab_size)
    tokens = np.asarray(seen[0])
    np.testing.assert_array_equal(tokens[1::2, :P], np.asarray(batch)[1::2, :P])
    assert np.all(tokens[0::2, :P] == task.process.mask_id)
    assert np.all(tokens[:, P:] == task.process.mask_id)


def test_samples_keep_the_prompts_and_guidance_one_is_the_conditional_model(task_and_params):
    task, params = task_and_params
    key = jax.random.key(5)
    x, info = jax.jit(lambda p, k: task.sample(p, k, 4))(params, key)
    prompts = task.prompts(4)
    np.testing.assert_array_equal(np.asarray(x)[:, :P], prompts[:, :P])
    assert int(info["nfe"]) > 0
    # guidance_scale = 1.0 (the config default): plain conditional sampling, same key.
    fixed_mask = jnp.broadcast_to(jnp.arange(16) < P, (4, 16))
    plain, _ = dd.sample(
        key,
        task.process,
        task.model_fn(params),
        (4, 16),
        sampler=task.sampler,
        num_steps=task.num_steps,
        fixed_tokens=jnp.asarray(prompts),
        fixed_mask=fixed_mask,
    )
    np.testing.assert_array_equal(np.asarray(x), np.asarray(plain))
    # The guided model at w = 1 is the conditional model's denoiser (one doubled-batch call).
    prefix = jnp.asarray(prompts[:, :P])
    guided = task.guided_model_fn(task.model_fn(params), prefix, 1.0)
    xt = jnp.asarray(prompts).at[:, P:].set(task.process.mask_id)
    t = jnp.full((4,), 0.7)
    np.testing.assert_allclose(
        np.asarray(guided(xt, t)),
        np.asarray(jax.nn.log_softmax(task.model_fn(params)(xt, t))),
        atol=1e-5,
    )


def test_guided_sampling_keeps_the_prompts():
    task = build_task(prefix_config(**{"sample.guidance_scale": 2.0}))
    params = random_params(task)
    x, info = jax.jit(lambda p, k: task.sample(p, k, 4))(params, jax.random.key(6))
    x = np.asarray(x)
    np.testing.assert_array_equal(x[:, :P], task.prompts(4)[:, :P])
    assert x.min() >= 0 and x.max() < task.vocab_size
    assert int(info["nfe"]) == task.num_steps  # one doubled-batch call per step


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"discrete.cond_prefix": 16}, "discrete.cond_prefix"),
        ({"discrete.cond_prefix": -1}, "discrete.cond_prefix"),
        ({"discrete.cond_dropout": 1.5}, "discrete.cond_dropout"),
        ({"sample.guidance_scale": float("inf")}, "sample.guidance_scale"),
        (
            {"process.name": "uniform", "train.loss": "score_entropy"},
            "process.name='masked' and train.loss='masked_elbo'",
        ),
        ({"discrete.cond_prefix": 0}, "discrete.cond_dropout"),
        (
            {"discrete.cond_prefix": 0, "discrete.cond_dropout": 0.0, "sample.guidance_scale": 2.0},
            "sample.guidance_scale",
        ),
        ({"sample.options": "fixed_mask=None"}, "fixed_tokens / fixed_mask"),
    ],
)
def test_config_errors(overrides, match):
    with pytest.raises(ValueError, match=match):
        build_task(prefix_config(**overrides))


@pytest.mark.slow
def test_tiny_run_end_to_end(tmp_path):
    config = prefix_config(**{"sample.guidance_scale": 1.5})
    result = training.train(config, str(tmp_path))
    assert result["elbo_bits_per_char"] > 0
    lines = training.sample(config, str(tmp_path))
    task = build_task(config)
    prompts = task.prompts(config.sample.num_samples)
    text = [task.source.tokenizer.decode(p[:P]) for p in prompts]
    assert len(lines) == 4 and all(line.startswith(t) for line, t in zip(lines, text, strict=True))
    assert os.listdir(tmp_path / "samples")
