"""Tensor parallelism: a (data 2, fsdp 2, model 2) step moves at most 1.5x the collective bytes
of the FSDP-only (2, 4, 1) step, and its loss equals the single-device loss.

Collective bytes are read from the compiled HLO (`experiments.benchmarks.memory.
collective_bytes`, checked here on a hand-written module whose answer is known).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from diffax.training import mesh as mesh_lib
from diffax.training.checkpoint import abstract_like
from diffax.training.mesh import global_array
from diffax.training.step import init_train_state, jit_train_step, make_train_step, state_shardings
from diffax.training.tasks import build_task
from experiments.benchmarks.memory import collective_bytes, matmul_flops, type_bytes
from tests.training.helpers import tiny_config

SEQ_LEN, BATCH = 32, 16

_HLO = """HloModule m, entry_computation_layout={(f32[8,4]{1,0})->f32[8,4]{1,0}}

%add (x: f32[], y: f32[]) -> f32[] {
  %x = f32[] parameter(0)
  %y = f32[] parameter(1)
  ROOT %sum = f32[] add(%x, %y)
}

%cond (p: (s32[], f32[8,4])) -> pred[] {
  %p = (s32[], f32[8,4]{1,0}) parameter(0)
  %i = s32[] get-tuple-element(%p), index=0
  %n = s32[] constant(3)
  ROOT %lt = pred[] compare(%i, %n), direction=LT
}

%body (q: (s32[], f32[8,4])) -> (s32[], f32[8,4]) {
  %q = (s32[], f32[8,4]{1,0}) parameter(0)
  %j = s32[] get-tuple-element(%q), index=0
  %w = f32[8,4]{1,0} get-tuple-element(%q), index=1
  %half = f32[4,4]{1,0} slice(%w), slice={[0:4], [0:4]}
  %ag = f32[8,4]{1,0} all-gather(%half), channel_id=1, replica_groups={{0,1}}, dimensions={0}
  %mm = f32[8,4]{1,0} dot(%ag, %half), lhs_contracting_dims={1}, rhs_contracting_dims={0}
  ROOT %t = (s32[], f32[8,4]{1,0}) tuple(%j, %mm)
}

ENTRY %main (a: f32[8,4]) -> f32[8,4] {
  %a = f32[8,4]{1,0} parameter(0)
  %ar = f32[8,4]{1,0} all-reduce(%a), channel_id=2, replica_groups={{0,1}}, to_apply=%add
  %zero = s32[] constant(0)
  %init = (s32[], f32[8,4]{1,0}) tuple(%zero, %ar)
  %loop = (s32[], f32[8,4]{1,0}) while(%init), condition=%cond, body=%body, backend_config={"known_trip_count":{"n":"3"}}
  %cp = bf16[2,2]{1,0} collective-permute(%h), channel_id=3, source_target_pairs={{0,1},{1,0}}
  ROOT %out = f32[8,4]{1,0} get-tuple-element(%loop), index=1
}
"""  # noqa: E501


def test_type_bytes():
    assert type_bytes("f32[8,4]{1,0}") == 128
    assert type_bytes("(s32[], bf16[2,3]{1,0})") == 4 + 12
    assert type_bytes("pred[]") == 1


def test_collective_bytes_counts_operands_results_and_loop_trips():
    got = collective_bytes(_HLO)
    # all-reduce: f32[8,4] in + out; all-gather in a 3-trip loop: (f32[4,4] in + f32[8,4] out) x 3;
    # collective-permute of an operand not defined in the module: its result only.
    assert got["all-reduce"] == 128 + 128
    assert got["all-gather"] == 3 * (64 + 128)
    assert got["collective-permute"] == 8
    assert got["reduce-scatter"] == got["all-to-all"] == 0
    assert got["total"] == 256 + 576 + 8


def test_matmul_flops_counts_loop_trips():
    # dot [8,4] x [4,4] in a 3-trip loop: 2 x 32 outputs x 4 contracted x 3.
    assert matmul_flops(_HLO) == 2 * 32 * 4 * 3


def test_matmul_flops_of_a_compiled_scan_equals_the_closed_form():
    layers, m, k = 6, 16, 32

    def f(x, w):
        return jax.lax.scan(lambda c, wi: (jnp.tanh(c @ wi), None), x, w)[0].sum()

    x, w = jnp.ones((m, k)), jnp.ones((layers, k, k))
    text = jax.jit(f).lower(x, w).compile().as_text()
    assert matmul_flops(text) == 2 * m * k * k * layers


def _config():
    # Byte tokens: 256 classes (a multiple of 128: no padded vocabulary), float32 compute.
    return tiny_config(
        **{
            "data.tokenizer": "byte",
            "data.seq_len": SEQ_LEN,
            "model.dim": 64,
            "model.depth": 2,
            "model.num_heads": 4,
            "model.dtype": "float32",
            "train.batch_size": BATCH,
        }
    )


MESHES = {
    "one": None,  # the first device alone
    "fsdp": {"data": 2, "fsdp": 4, "model": 1},
    "tp": {"data": 2, "fsdp": 2, "model": 2},
}


@pytest.fixture(scope="module")
def steps():
    """Per mesh: (mesh, compiled train step, state initialiser, batch sharding); compiled once."""
    config = _config()
    task = build_task(config)
    assert task.vocab_size == 256
    tx = optax.adam(1e-3)
    out = {}
    for name, shape in MESHES.items():
        if shape is None:
            mesh = mesh_lib.make_mesh({"data": 1}, devices=jax.devices()[:1])
        else:
            mesh = mesh_lib.make_mesh(shape)
        replicated, batch_sharding = mesh_lib.replicated(mesh), mesh_lib.batch_sharding(mesh)
        params_sharding = jax.tree.unflatten(
            jax.tree.structure(jax.eval_shape(task.init_params)),
            jax.tree.leaves(
                mesh_lib.param_shardings(task.model_def.abstract_params, config.mesh.rules, mesh)
            ),
        )
        init = lambda: init_train_state(task.init_params(), tx, 0)
        shardings = state_shardings(jax.eval_shape(init), params_sharding, tx, replicated)
        step = jit_train_step(
            make_train_step(task.loss, tx, ema_decay=0.9), shardings, batch_sharding, replicated
        )
        state = abstract_like(jax.eval_shape(init), shardings)
        batch = jax.ShapeDtypeStruct((BATCH, SEQ_LEN), np.int32, sharding=batch_sharding)
        with jax.set_mesh(mesh):
            compiled = step.lower(state, batch).compile()
        out[name] = (mesh, compiled, jax.jit(init, out_shardings=shardings), batch_sharding)
    return out


@pytest.mark.slow
def test_tensor_parallel_collective_bytes_within_1_5x_of_fsdp(steps):
    fsdp = collective_bytes(steps["fsdp"][1].as_text())
    tp = collective_bytes(steps["tp"][1].as_text())
    ratio = tp["total"] / fsdp["total"]
    assert ratio <= 1.5, f"TP {tp} vs FSDP {fsdp}: ratio {ratio:.2f}"


def _losses(mesh, compiled, init, batch_sharding):
    losses = []
    with jax.set_mesh(mesh):
        state = init()
        for i in range(2):
            batch = np.random.default_rng(i).integers(0, 256, (BATCH, SEQ_LEN)).astype(np.int32)
            state, metrics = compiled(state, global_array(batch, batch_sharding))
            losses.append(float(metrics["loss"]))
    return losses


@pytest.mark.slow
def test_tensor_parallel_loss_equals_single_device_loss(steps):
    np.testing.assert_allclose(_losses(*steps["tp"]), _losses(*steps["one"]), rtol=1e-5)
