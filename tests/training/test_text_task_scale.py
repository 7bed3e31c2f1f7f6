"""Text task at scale: vocab-chunked loss, z-loss, and document segments from EOS."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import diffax.discrete as dd
from diffax.nn.attention import segment_ids_from_eos
from diffax.training.tasks import build_task
from tests.training.helpers import tiny_config

B = 4


@pytest.fixture(scope="module")
def setup():
    task = build_task(tiny_config(**{"train.loss_vocab_chunk": 8}))
    # Random parameters instead of the initial ones: zero-initialised heads would make every
    # logit 0. The head's padding columns get random values too (they must not count).
    leaves, treedef = jax.tree.flatten(nnx.to_pure_dict(task.model_def.abstract_params))

    @jax.jit
    def random_params():
        keys = jax.random.split(jax.random.key(0), len(leaves))
        values = [0.5 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys, strict=True)]
        return jax.tree.unflatten(treedef, values)

    batch = jax.random.randint(jax.random.key(1), (B, task.seq_len), 0, task.vocab_size)
    return task, random_params(), batch


def _with(task, **changes):
    """A shallow copy of `task` with attributes replaced (same model, process and source)."""
    clone = object.__new__(type(task))
    clone.__dict__.update(task.__dict__, **changes)
    return clone


def test_chunked_loss_equals_full_logits_loss_and_the_masked_elbo(setup):
    task, params, batch = setup
    assert task.vocab_size == 27 and task.vocab_chunk == 8  # 4 chunks, the last one partial
    key = jax.random.key(2)

    @jax.jit
    def run(p):
        return (
            task.loss(p, key, batch),
            _with(task, vocab_chunk=0).loss(p, key, batch),
            dd.masked_elbo(key, task.process, task.model_fn(p), batch),
        )

    (got, metrics), (want, want_metrics), elbo = run(params)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    np.testing.assert_allclose(metrics["bits_per_char"], want_metrics["bits_per_char"], rtol=1e-5)
    # The reported quantity is the masked negative ELBO per token, as before.
    np.testing.assert_allclose(want, jnp.mean(elbo) / task.seq_len, rtol=1e-6)
    np.testing.assert_allclose(metrics["bits_per_char"], got / np.log(2.0), rtol=1e-6)


def test_chunked_loss_gradient_equals_full_logits_gradient(setup):
    task, params, batch = setup
    key = jax.random.key(2)

    @jax.jit
    def grads(p):
        return (
            jax.grad(lambda q: task.loss(q, key, batch)[0])(p),
            jax.grad(lambda q: _with(task, vocab_chunk=0).loss(q, key, batch)[0])(p),
        )

    got, want = grads(params)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5 * float(jnp.abs(w).max()))


def test_chunked_eval_equals_full_logits_eval(setup):
    task, params, batch = setup
    assert task.chunked_eval
    key = jax.random.key(3)
    got = jax.jit(lambda p: task.eval_nats(p, key, batch, 2))(params)
    want = jax.jit(lambda p: _with(task, chunked_eval=False).eval_nats(p, key, batch, 2))(params)
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("chunk", [8, 0])
def test_z_loss_adds_exactly_z_times_mean_log_z_squared(setup, chunk):
    task, params, batch = setup
    key, z = jax.random.key(4), 0.25
    # The reference: the noisy batch masked_elbo draws from `key`, the full logits there, and
    # the mean of logsumexp^2 over the masked positions.
    key_t, key_x, _ = jax.random.split(key, 3)
    t = dd.stratified_times(key_t, B)
    xt = task.process.sample_marginal(key_x, batch, t)
    plain, loss, metrics, log_z = jax.jit(
        lambda p: (
            _with(task, vocab_chunk=chunk).loss(p, key, batch)[0],
            *_with(task, vocab_chunk=chunk, z_loss=z).loss(p, key, batch),
            jax.nn.logsumexp(task.model_fn(p)(xt, t), axis=-1),
        )
    )(params)
    masked = np.asarray(xt == task.process.mask_id)
    assert 0 < masked.sum() < masked.size
    expected = z * np.mean(np.square(np.asarray(log_z, np.float64))[masked])
    np.testing.assert_allclose(metrics["z_loss"], expected, rtol=1e-5)
    np.testing.assert_allclose(loss - plain, expected, rtol=1e-4)


def test_documents_from_eos_reach_the_model_in_loss_and_eval(setup):
    task, params, batch = setup
    eos = 0
    batch = batch.at[:, 5].set(eos).at[1:, 10].set(eos)
    with_eos = _with(task, eos_id=eos)
    key = jax.random.key(5)

    @jax.jit
    def run(p):
        # The reference passes the segments of the clean batch to the model explicitly.
        head_fn = task.head_fn(p, segment_ids_from_eos(batch, eos))
        return (
            with_eos.loss(p, key, batch)[0],
            jnp.mean(dd.masked_elbo(key, task.process, head_fn, batch)) / task.seq_len,
            task.loss(p, key, batch)[0],
            with_eos.eval_nats(p, key, batch, 1),
            dd.elbo(key, task.process, head_fn, batch),
        )

    loss, want, no_segments, nats, want_nats = run(params)
    np.testing.assert_allclose(loss, want, rtol=1e-6)
    assert abs(float(no_segments) - float(loss)) > 1e-4  # the segments change attention
    np.testing.assert_allclose(nats, want_nats, rtol=1e-6)


def test_z_loss_needs_the_masked_elbo():
    with pytest.raises(ValueError, match="train.z_loss"):
        build_task(
            tiny_config(
                **{"train.z_loss": 1e-4, "train.loss": "ctmc_elbo", "process.name": "uniform"}
            )
        )
