"""The sharded train step: multi-device equals single-device; accumulation equals a big batch."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from diffax.training import mesh as mesh_lib
from diffax.training.mesh import global_array
from diffax.training.step import init_train_state, jit_train_step, make_train_step, state_shardings
from diffax.training.tasks import build_task
from tests.training.helpers import tiny_config

_RULES = tiny_config().mesh.rules


def _run_steps(task, tx, mesh, batches, accum_steps=1, loss_fn=None):
    replicated = mesh_lib.replicated(mesh)
    batch_sharding = mesh_lib.batch_sharding(mesh)
    params_sharding = jax.tree.unflatten(
        jax.tree.structure(jax.eval_shape(task.init_params)),
        jax.tree.leaves(mesh_lib.param_shardings(task.model_def.abstract_params, _RULES, mesh)),
    )
    init = lambda: init_train_state(task.init_params(), tx, 0)
    shardings = state_shardings(jax.eval_shape(init), params_sharding, tx, replicated)
    state = jax.jit(init, out_shardings=shardings)()
    step = jit_train_step(
        make_train_step(loss_fn or task.loss, tx, ema_decay=0.9, accum_steps=accum_steps),
        shardings,
        batch_sharding,
        replicated,
    )
    losses = []
    with jax.set_mesh(mesh):  # as the train loop runs it (activation sharding hints apply)
        for b in batches:
            state, metrics = step(state, global_array(b, batch_sharding))
            losses.append(float(metrics["loss"]))
    return jax.device_get(state), losses


@pytest.fixture(scope="module")
def setup():
    task = build_task(tiny_config())
    tx = optax.adam(1e-2)
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, task.vocab_size, (16, 16)).astype(np.int32) for _ in range(3)]
    return task, tx, batches


def test_eight_devices_match_one_device(setup):
    assert jax.device_count() == 8
    task, tx, batches = setup
    one = mesh_lib.make_mesh({"data": 1}, devices=jax.devices()[:1])
    eight = mesh_lib.make_mesh({"data": 2, "fsdp": 4})
    s1, l1 = _run_steps(task, tx, one, batches)
    s8, l8 = _run_steps(task, tx, eight, batches)
    np.testing.assert_allclose(l1, l8, rtol=1e-5)
    # Adam divides by sqrt(v): a gradient entry near zero, summed in another order across devices,
    # can move by a visible fraction of one step. 1e-4 is 1% of one step at lr = 1e-2.
    for a, b in zip(jax.tree.leaves(s1["params"]), jax.tree.leaves(s8["params"]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_fsdp_shards_parameters(setup):
    task, _, _ = setup
    mesh = mesh_lib.make_mesh({"data": 2, "fsdp": 4})
    shardings = mesh_lib.param_shardings(task.model_def.abstract_params, _RULES, mesh)
    specs = {str(s.spec) for s in jax.tree.leaves(shardings)}
    assert any("fsdp" in s for s in specs)


def test_gradient_accumulation_equals_big_batch(setup):
    task, tx, batches = setup

    # A deterministic per-example loss, so micro-batches see exactly what the big batch sees.
    def loss_fn(params, key, batch):
        t = 0.05 + 0.9 * (batch[:, 0] % 7) / 7.0  # a function of the example alone
        model = task.model_def.module(params)
        logits = model(jnp.where(jnp.arange(batch.shape[1]) % 2 == 0, task.vocab_size, batch), t)
        nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), batch[..., None], -1)
        return jnp.mean(nll), {}

    mesh = mesh_lib.make_mesh({"data": 1}, devices=jax.devices()[:1])
    s1, l1 = _run_steps(task, tx, mesh, batches, accum_steps=1, loss_fn=loss_fn)
    s4, l4 = _run_steps(task, tx, mesh, batches, accum_steps=4, loss_fn=loss_fn)
    np.testing.assert_allclose(l1, l4, rtol=1e-5)
    # As above: Adam's 1/sqrt(v) turns summation-order differences in a near-zero gradient entry
    # into a visible fraction of one step; 1e-4 is 1% of one step at lr = 1e-2.
    for a, b in zip(jax.tree.leaves(s1["params"]), jax.tree.leaves(s4["params"]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_nan_guard_skips_update(setup):
    task, tx, batches = setup

    def loss_fn(params, key, batch):
        loss, m = task.loss(params, key, batch)
        return loss * jnp.nan, m

    mesh = mesh_lib.make_mesh({"data": 1}, devices=jax.devices()[:1])
    state, losses = _run_steps(task, tx, mesh, batches[:2], loss_fn=loss_fn)
    assert int(state["skipped"]) == 2 and int(state["step"]) == 2
    init = jax.device_get(jax.jit(task.init_params)())
    for a, b in zip(jax.tree.leaves(init), jax.tree.leaves(state["params"]), strict=True):
        np.testing.assert_array_equal(a, b)


def test_guard_skips_finite_gradients_whose_norm_overflows(setup):
    # Every gradient entry is finite (about 1e30), but the sum of their squares overflows
    # float32: clipping by that norm would turn the update into NaN or zero.
    task, tx, batches = setup

    def loss_fn(params, key, batch):
        loss, m = task.loss(params, key, batch)
        scale = sum(jnp.sum(x) for x in jax.tree.leaves(params)) * 1e30
        return loss + scale - jax.lax.stop_gradient(scale), m

    mesh = mesh_lib.make_mesh({"data": 1}, devices=jax.devices()[:1])
    state, losses = _run_steps(task, tx, mesh, batches[:2], loss_fn=loss_fn)
    assert all(np.isfinite(losses))
    assert int(state["skipped"]) == 2 and int(state["step"]) == 2
    init = jax.device_get(jax.jit(task.init_params)())
    for a, b in zip(jax.tree.leaves(init), jax.tree.leaves(state["params"]), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "shape,match",
    [
        ({"data": 3}, "has 3 devices"),
        ({"data": -1, "fsdp": 3}, "does not divide"),
        ({"data": 0}, "positive"),
    ],
)
def test_bad_mesh(shape, match):
    with pytest.raises(ValueError, match=match):
        mesh_lib.make_mesh(shape)


def test_parameter_count_groups_by_role():
    from flax import nnx

    from diffax.training.state import ModelDef

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.embed = nnx.Param(jnp.zeros((11, 4)), logical_axes=("vocab", "embed"))
            self.t_fc1 = nnx.Linear(4, 4, rngs=rngs)  # time MLP: 20
            self.blocks = nnx.List([nnx.Linear(4, 4, rngs=rngs) for _ in range(2)])  # 2 x 20
            self.final_ada = nnx.Linear(4, 8, rngs=rngs)  # adaLN: 40
            self.head = nnx.Param(jnp.zeros((4, 16)), logical_axes=("embed", "vocab"))

    mdef, _ = ModelDef.create(Net, 0)
    counts = mdef.count_groups()
    assert counts == {"total": 208, "embedding": 44 + 64, "conditioning": 60, "body": 40}
    assert counts["total"] == mdef.count()
