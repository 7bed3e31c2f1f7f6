"""Semi-autoregressive decoding (LLaDA / Fast-dLLM caches) through the text task's config keys."""

import jax
import numpy as np
import pytest
from flax import nnx

import diffax.discrete as dd
from diffax.training.tasks import build_task
from tests.training.helpers import tiny_config


def _task(**overrides):
    return build_task(tiny_config(**{"sample.block_size": 4, "sample.num_steps": 8, **overrides}))


def _random_params(task, seed=0, scale=0.5):
    leaves, treedef = jax.tree.flatten(nnx.to_pure_dict(task.model_def.abstract_params))
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    values = [scale * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys, strict=True)]
    return jax.tree.unflatten(treedef, values)


@pytest.mark.parametrize("kv_cache", ["none", "prefix", "dual"])
def test_task_samples_with_each_cache_like_semi_ar_sample(kv_cache):
    task = _task(**{"sample.kv_cache": kv_cache, "sample.sampler": "confidence"})
    params, key = _random_params(task), jax.random.key(3)
    tokens, info = task.sample(params, key, 3)
    tokens = np.asarray(tokens)
    assert tokens.shape == (3, task.seq_len)
    assert np.all((tokens >= 0) & (tokens < task.vocab_size))
    # The exact reference (every call a full forward) on the same key.
    module = task.model_def.module(params)
    exact, exact_info = dd.semi_ar_sample(
        key,
        task.process,
        dd.full_cached_model(lambda x, t: module(x, t)),
        (3, task.seq_len),
        block_size=4,
        steps_per_block=8 // (task.seq_len // 4),
        sampler="confidence",
    )
    if kv_cache == "none":
        np.testing.assert_array_equal(tokens, np.asarray(exact))
    # Cached modes process fewer positions than full forwards.
    assert int(info["token_evals"]) <= int(exact_info["token_evals"])


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"sample.block_size": 5}, "sample.block_size=5 must divide"),
        ({"sample.num_steps": 6}, "sample.num_steps=6 must be a multiple"),
        ({"sample.kv_cache": "exact"}, "'exact' is for block diffusion"),
        ({"sample.block_size": 0, "sample.kv_cache": "dual"}, "need block decoding"),
        ({"sample.options": "trajectory=True"}, "trajectory not supported"),
    ],
)
def test_bad_block_decoding_settings_name_the_key(overrides, match):
    with pytest.raises(ValueError, match=match):
        _task(**overrides)
