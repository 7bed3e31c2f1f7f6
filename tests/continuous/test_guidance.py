"""Classifier-free guidance: limits, one batched call, any parameterization, exact for w = 1."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffax.continuous as dc

VP = dc.VP()
# Two classes; label 2 is the null label (the unconditional mixture of both).
CLASSES = [
    dc.GaussianMixture(jnp.ones(1), jnp.asarray([[2.0, 0.0]]), jnp.full((1, 2), 0.3)),
    dc.GaussianMixture(jnp.ones(1), jnp.asarray([[-2.0, 0.0]]), jnp.full((1, 2), 0.3)),
    dc.GaussianMixture(
        jnp.full((2,), 0.5), jnp.asarray([[2.0, 0.0], [-2.0, 0.0]]), jnp.full((2, 2), 0.3)
    ),
]


def _model(prediction, calls=None):
    def fn(x, t, label):
        if calls is not None:
            calls.append(x.shape[0])
        outs = jnp.stack([c.model_fn(VP, prediction)(x, t) for c in CLASSES])
        return outs[label, jnp.arange(x.shape[0])]

    return fn


def test_guidance_limits_and_single_call():
    x = jax.random.normal(jax.random.PRNGKey(0), (5, 2))
    t = jnp.full((5,), 0.4)
    cond, null = jnp.zeros((5,), jnp.int32), jnp.full((5,), 2, jnp.int32)
    calls = []
    guided = dc.classifier_free_guidance(_model("eps", calls), cond, null, 1.0)
    np.testing.assert_allclose(guided(x, t), CLASSES[0].model_fn(VP, "eps")(x, t), rtol=1e-6)
    assert calls == [10]
    unguided = dc.classifier_free_guidance(_model("eps"), cond, null, 0.0)
    np.testing.assert_allclose(unguided(x, t), CLASSES[2].model_fn(VP, "eps")(x, t), rtol=1e-6)


def test_combining_in_any_parameterization_is_the_same():
    x = jax.random.normal(jax.random.PRNGKey(1), (6, 2))
    t = jnp.linspace(0.1, 0.9, 6)
    cond, null = jnp.ones((6,), jnp.int32), jnp.full((6,), 2, jnp.int32)
    ref = dc.classifier_free_guidance(_model("eps"), cond, null, 3.0)(x, t)
    for space in dc.PREDICTIONS:
        got = dc.classifier_free_guidance(
            _model("eps"), cond, null, 3.0, process=VP, combine_in=space
        )(x, t)
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5, err_msg=space)
    # A model trained to predict x0, guided in x0 space, is the same guided model again.
    x0_guided = dc.classifier_free_guidance(_model("x0"), cond, null, 3.0)(x, t)
    np.testing.assert_allclose(
        dc.convert(VP, x0_guided, x, t, source="x0", target="eps"), ref, rtol=1e-4, atol=1e-4
    )


def test_guidance_errors():
    with pytest.raises(ValueError, match="needs the process"):
        dc.classifier_free_guidance(_model("eps"), jnp.zeros(2), jnp.zeros(2), 2.0, combine_in="x0")
    with pytest.raises(ValueError, match="combine_in='noise' is not allowed"):
        dc.classifier_free_guidance(
            _model("eps"), jnp.zeros(2), jnp.zeros(2), 2.0, process=VP, combine_in="noise"
        )
