"""Training throughput: steps/s, tokens/s (images/s), peak memory and (on accelerators) MFU.

Times the real sharded train step of `diffax.training` (AdamW, EMA, NaN guard; donated state) for
the text transformer (masked ELBO) and the image U-Net (denoising score matching, VP process) at a
few sizes. FLOPs per step come from XLA's cost analysis of the compiled step; MFU divides achieved
FLOP/s by the device's peak dense bf16 (or fp32 on CPU: not reported) rate.

  python -m experiments.benchmarks.train_throughput            # sizes that fit the device
  python -m experiments.benchmarks.train_throughput --quick    # smallest sizes (CPU smoke run)

Prints a table and writes experiments/benchmarks/results/train_throughput_<platform>.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import diffax.continuous as dc
import diffax.discrete as dd
from diffax.nn import DiffusionTransformer, UNet
from diffax.training import mesh as mesh_lib
from diffax.training.state import ModelDef
from diffax.training.step import init_train_state, jit_train_step, make_train_step, state_shardings

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

# Peak dense bf16 FLOP/s by device kind (vendor data sheets, without sparsity).
PEAK_BF16 = {
    "NVIDIA H100 80GB HBM3": 989e12,
    "NVIDIA H100": 989e12,
    "NVIDIA H200": 989e12,
    "NVIDIA A100-SXM4-80GB": 312e12,
    "NVIDIA A100-SXM4-40GB": 312e12,
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
}

TRANSFORMERS = {
    # name: (dim, depth, heads)
    "tiny-1M": (128, 3, 4),
    "small-20M": (384, 8, 6),
    "base-100M": (768, 12, 12),
}
UNETS = {
    # name: (base channels, mults, res blocks, image size)
    "unet-2M-32px": (32, (1, 2, 2), 2, 32),
    "unet-35M-32px": (128, (1, 2, 2, 2), 2, 32),
}


def peak_flops(device) -> float | None:
    """Peak bf16 FLOP/s of `device`, or None if unknown (CPUs)."""
    kind = device.device_kind
    for name, value in PEAK_BF16.items():
        if kind.startswith(name):
            return value
    return None


def _transformer_case(name, seq_len, batch, dtype):
    dim, depth, heads = TRANSFORMERS[name]
    vocab = 256
    process = dd.Masked(vocab)
    build = lambda rngs: DiffusionTransformer(
        vocab + 1, vocab, seq_len, dim, depth, heads, rngs=rngs, dtype=dtype
    )
    mdef, init = ModelDef.create(build, 0)

    def loss(params, key, x):
        module = mdef.module(params)
        nats = dd.masked_elbo(key, process, lambda xt, t: module(xt, t), x)
        return jnp.mean(nats) / seq_len, {}

    data = np.random.default_rng(0).integers(0, vocab, (batch, seq_len)).astype(np.int32)
    return mdef, init, loss, data, batch * seq_len, "tokens"


def _unet_case(name, batch, dtype):
    base, mults, blocks, size = UNETS[name]
    process = dc.VP(0.1, 20.0)
    build = lambda rngs: UNet(3, base, mults, blocks, (1,), rngs=rngs, dtype=dtype)
    mdef, init = ModelDef.create(build, 0)

    def loss(params, key, x):
        module = mdef.module(params)
        return jnp.mean(dc.dsm_loss(key, process, lambda xt, t: module(xt, t), x)), {}

    data = np.random.default_rng(0).uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)
    return mdef, init, loss, data, batch, "images"


def measure(case, *, steps: int, mesh) -> dict:
    """Compiles the train step of `case` and times `steps` calls; returns the measurements."""
    mdef, init, loss, data, units, unit_name = case
    tx = optax.adamw(1e-4)
    replicated, batch_sharding = mesh_lib.replicated(mesh), mesh_lib.batch_sharding(mesh, data.ndim)
    params_sharding = jax.tree.unflatten(
        jax.tree.structure(jax.eval_shape(init)),
        jax.tree.leaves(mesh_lib.param_shardings(mdef.abstract_params, (("embed", "fsdp"),), mesh)),
    )
    make_state = lambda: init_train_state(init(), tx, 0)
    shardings = state_shardings(jax.eval_shape(make_state), params_sharding, tx, replicated)
    state = jax.jit(make_state, out_shardings=shardings)()
    step = jit_train_step(
        make_train_step(loss, tx, ema_decay=0.999), shardings, batch_sharding, replicated
    )
    batch = jax.device_put(data, batch_sharding)
    t0 = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    compile_s = time.perf_counter() - t0
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    flops = float(cost.get("flops", float("nan"))) if cost else float("nan")
    mem = compiled.memory_analysis()
    peak_bytes = None
    if mem is not None:
        peak_bytes = (
            mem.argument_size_in_bytes
            + mem.output_size_in_bytes
            + mem.temp_size_in_bytes
            - mem.alias_size_in_bytes
        )
    for _ in range(2):  # warm-up
        state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        state, metrics = compiled(state, batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t)
    med = statistics.median(times)
    device = jax.devices()[0]
    stats = device.memory_stats() or {}
    peak = peak_flops(device)
    achieved = flops / med if math.isfinite(flops) else float("nan")
    return {
        "params": mdef.count(),
        "compile_s": compile_s,
        "step_s_median": med,
        "steps_per_s": 1.0 / med,
        f"{unit_name}_per_s": units / med,
        "flops_per_step": flops,
        "tflops_per_s": achieved / 1e12,
        "mfu": achieved / (peak * jax.device_count()) if peak else None,
        "compiled_bytes": peak_bytes,
        "device_peak_bytes": stats.get("peak_bytes_in_use"),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smallest sizes only")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    args = parser.parse_args()
    plat = jax.default_backend()
    dtype_name = (
        args.dtype if args.dtype != "auto" else ("float32" if plat == "cpu" else "bfloat16")
    )
    dtype = jnp.bfloat16 if dtype_name == "bfloat16" else jnp.float32
    mesh = mesh_lib.make_mesh({"data": -1})
    if args.quick or plat == "cpu":
        cases = [
            ("transformer", "tiny-1M", 256, 32),
            ("transformer", "small-20M", 256, 16),
            ("unet", "unet-2M-32px", None, 16),
        ]
        if args.quick:
            cases = cases[:1] + cases[2:]
    else:
        cases = [
            ("transformer", "small-20M", 1024, 64),
            ("transformer", "base-100M", 256, 256),
            ("transformer", "base-100M", 1024, 64),
            ("transformer", "base-100M", 4096, 16),
            ("unet", "unet-35M-32px", None, 256),
        ]
    rows = []
    for kind, name, seq_len, batch in cases:
        case = (
            _transformer_case(name, seq_len, batch, dtype)
            if kind == "transformer"
            else _unet_case(name, batch, dtype)
        )
        result = measure(case, steps=args.steps, mesh=mesh)
        result.update(model=name, kind=kind, seq_len=seq_len, batch=batch, dtype=dtype_name)
        rows.append(result)
        rate = result.get("tokens_per_s") or result.get("images_per_s")
        unit = "tok/s" if kind == "transformer" else "img/s"
        mfu = f"{100 * result['mfu']:.1f}%" if result["mfu"] else "-"
        mem = result["device_peak_bytes"] or result["compiled_bytes"] or 0
        print(
            f"{name:14s} L={seq_len or '-':>5} B={batch:4d} params={result['params'] / 1e6:6.1f}M "
            f"step={1e3 * result['step_s_median']:8.1f} ms  {rate:10.0f} {unit}  "
            f"{result['tflops_per_s']:7.2f} TFLOP/s  MFU={mfu:>6}  mem={mem / 2**30:.2f} GiB",
            flush=True,
        )
    out = {
        "platform": plat,
        "device_kind": jax.devices()[0].device_kind,
        "device_count": jax.device_count(),
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "rows": rows,
    }
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"train_throughput_{plat}.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=2)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
