"""The masked ELBO with a `LinearHead` network output equals the ELBO of the same logits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffax.discrete as dd
from diffax.core import LinearHead, head_logits
from diffax.discrete.losses import masked_elbo_terms, reconstruction
from diffax.discrete.losses.masked import masked_bound_with_log_z

V, VP, D, B, L = 300, 384, 16, 4, 12


def _params(key):
    k = jax.random.split(key, 4)
    return {
        "embed": jax.random.normal(k[0], (V + 1, D)),
        "time": jax.random.normal(k[1], (D,)),
        "kernel": jax.random.normal(k[2], (D, VP)),
        # Padding entries that would change every softmax they took part in.
        "bias": jax.random.normal(k[3], (VP,)).at[V:].set(50.0),
    }


def _hidden(params, tokens, t):
    return jnp.tanh(params["embed"][tokens] + t[:, None, None] * params["time"])


def _head_fn(params, chunk_size):
    def fn(tokens, t):
        return LinearHead(_hidden(params, tokens, t), params["kernel"], params["bias"], chunk_size)

    return fn


def _logits_fn(params):
    def fn(tokens, t):
        return head_logits(
            LinearHead(_hidden(params, tokens, t), params["kernel"], params["bias"]), V
        )

    return fn


def _data(key):
    return jax.random.randint(key, (B, L), 0, V)


@pytest.mark.parametrize("chunk_size", [64, 100, 512])
def test_masked_elbo_value_and_gradient_match_logits(chunk_size):
    params, x0 = _params(jax.random.key(0)), _data(jax.random.key(1))
    process = dd.Masked(V)
    key = jax.random.key(2)

    def loss(fn):
        return lambda p: jnp.mean(dd.masked_elbo(key, process, fn(p), x0))

    got, got_grad = jax.jit(jax.value_and_grad(loss(lambda p: _head_fn(p, chunk_size))))(params)
    want, want_grad = jax.jit(jax.value_and_grad(loss(_logits_fn)))(params)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    for name in params:
        g, w = np.asarray(got_grad[name]), np.asarray(want_grad[name])
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5 * np.abs(w).max(), err_msg=name)
    assert float(jnp.abs(got_grad["kernel"][:, V:]).max()) == 0.0


def test_terms_and_log_z_match_logits():
    params, x0 = _params(jax.random.key(3)), _data(jax.random.key(4))
    process = dd.Masked(V, dd.LogLinearSchedule(eps=1e-3))
    key = jax.random.key(5)
    terms, log_z, masked = masked_bound_with_log_z(key, process, _head_fn(params, 128), x0)
    ref_terms, _, ref_masked = masked_bound_with_log_z(key, process, _logits_fn(params), x0)
    for got, want in zip(terms, ref_terms, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5)
    np.testing.assert_array_equal(masked, ref_masked)
    # log_z is the log-partition of the denoiser logits at the sampled x_t.
    t = dd.stratified_times(jax.random.split(key, 3)[0], B)
    xt = process.sample_marginal(jax.random.split(key, 3)[1], x0, t)
    np.testing.assert_array_equal(xt == V, masked)
    logits = _logits_fn(params)(xt, t)
    np.testing.assert_allclose(log_z, jax.nn.logsumexp(logits, axis=-1), rtol=1e-5)
    per_token = masked_elbo_terms(process, _head_fn(params, 128)(xt, t), x0, xt, t)
    np.testing.assert_allclose(per_token, masked_elbo_terms(process, logits, x0, xt, t), rtol=1e-5)


def test_reconstruction_and_multi_sample_elbo_match_logits():
    """A geometric schedule has alpha(0) < 1, so the reconstruction term is not zero."""
    params, x0 = _params(jax.random.key(6)), _data(jax.random.key(7))
    process = dd.Masked(V, dd.GeometricSchedule(sigma_min=0.5, sigma_max=5.0))
    key = jax.random.key(8)
    head, logits = _head_fn(params, 128), _logits_fn(params)
    rec = reconstruction(key, process, head, x0, "denoiser")
    assert float(jnp.min(rec)) > 0.0
    np.testing.assert_allclose(rec, reconstruction(key, process, logits, x0, "denoiser"), rtol=1e-5)
    elbo = jax.jit(lambda fn: dd.elbo(key, process, fn, x0, num_samples=3), static_argnums=0)
    np.testing.assert_allclose(elbo(head), elbo(logits), rtol=1e-5)


def test_linear_head_needs_a_denoiser_and_the_batch_shape():
    params, x0 = _params(jax.random.key(9)), _data(jax.random.key(10))
    process = dd.Masked(V, dd.GeometricSchedule(sigma_min=0.5, sigma_max=5.0))
    with pytest.raises(ValueError, match="prediction"):
        reconstruction(jax.random.key(0), process, _head_fn(params, 128), x0, "concrete_score")

    def short(tokens, t):
        return _head_fn(params, 128)(tokens[:, :-1], t)

    with pytest.raises(ValueError, match="LinearHead.hidden"):
        dd.masked_elbo(jax.random.key(0), dd.Masked(V), short, x0)
