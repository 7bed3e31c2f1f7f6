"""Training throughput: steps/s, tokens/s (images/s), peak memory and (on accelerators) MFU.

Times the real sharded train step of `diffax.training`. Text cases build it from a config exactly
as a run does (`configs/owt_small.py` with the sizes below: the task through `build_task`, the
optimizer, shardings and state of `diffax.training.run.Run`; masked ELBO with the vocab-chunked
loss, cond_dim 128, layers under scan, attention "auto": cudnn on GPU, splash on TPU), with random
tokens of a vocabulary of 256 or 50,257 (GPT-2's). The image U-Net case (denoising score matching,
VP process) is built directly.

MFU = (model FLOPs per device per step / step time) / peak dense bf16 FLOP/s of one device. Model
FLOPs of the transformer are analytic (`memory.model_flops`: 6 x matmul parameters per token plus
attention; no remat recomputation), divided by the device count. Also reported: the matmul FLOPs
of one device's compiled program with loops counted per trip (`memory.matmul_flops`; includes
recomputation: "hardware" FLOPs) and XLA's `cost_analysis()` (which counts a `scan` body once, so
it under-counts scanned layers; used for the U-Net, which has no loops). On CPU (no bf16 peak)
MFU is not reported.

  python -m experiments.benchmarks.train_throughput            # sizes that fit the device
  python -m experiments.benchmarks.train_throughput --quick    # smallest sizes (CPU smoke run)
  python -m experiments.benchmarks.train_throughput --only=owt_small --remat=none

Prints a table and writes experiments/benchmarks/results/train_throughput_<platform>.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import diffax.continuous as dc
from configs import owt_small
from diffax.core.compilation import enable_compilation_cache
from diffax.nn import UNet
from diffax.training import mesh as mesh_lib
from diffax.training.mesh import global_array
from diffax.training.run import Run
from diffax.training.state import ModelDef
from diffax.training.step import init_train_state, jit_train_step, make_train_step, state_shardings
from experiments.benchmarks.memory import matmul_flops, model_flops, step_config

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

# Peak dense bf16 FLOP/s of one device, by device kind (vendor data sheets, without sparsity).
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
    "owt_small": (768, 12, 12),
}
UNETS = {
    # name: (base channels, mults, res blocks, image size)
    "unet-2M-32px": (32, (1, 2, 2), 2, 32),
    "unet-35M-32px": (128, (1, 2, 2, 2), 2, 32),
}
GPT2_VOCAB = 50_257


def peak_flops(device) -> float | None:
    """Peak bf16 FLOP/s of `device`, or None if unknown (CPUs)."""
    kind = device.device_kind
    for name, value in PEAK_BF16.items():
        if kind.startswith(name):
            return value
    return None


def _transformer_case(name, seq_len, batch, vocab, dtype_name, overrides, workdir):
    """The real text train step of `configs/owt_small.py` at the sizes of `name`."""
    dim, depth, heads = TRANSFORMERS[name]
    sizes = {"model.dim": dim, "model.depth": depth, "model.num_heads": heads}
    config = step_config(
        owt_small,
        seq_len=seq_len,
        batch_size=batch,
        vocab_size=vocab,
        mesh={"data": -1, "fsdp": 1, "model": 1},
        overrides={**sizes, "model.dtype": dtype_name, **overrides},
    )
    run = Run(config, workdir, for_training=True)
    with jax.set_mesh(run.mesh):
        state = run.init_state()
    step = jit_train_step(
        make_train_step(run.task.loss, run.tx, ema_decay=config.train.ema_decay),
        run.state_sharding,
        run.batch_sharding,
        run.replicated,
    )
    data = np.random.default_rng(0).integers(0, vocab, (batch, seq_len)).astype(np.int32)
    m = config.model
    flops = model_flops(m.dim, m.depth, m.mlp_ratio, seq_len, vocab, batch * seq_len)
    return {
        "mesh": run.mesh,
        "state": state,
        "step": step,
        "batch": global_array(data, run.batch_sharding),
        "units": batch * seq_len,
        "unit": "tokens",
        "params": _param_counts(run.task.model_def),
        "model_flops_per_device": flops / jax.device_count(),
        "settings": {
            k: m[k] for k in ("cond_dim", "attention", "scan_layers", "remat", "vocab_multiple")
        }
        | {"loss_vocab_chunk": config.train.loss_vocab_chunk},
    }


def _param_counts(model_def) -> dict[str, int]:
    try:
        from diffax.nn.transformer import parameter_counts
    except ImportError:  # a model without grouped counts: the total only
        return {"total": model_def.count()}
    return {k: int(v) for k, v in parameter_counts(model_def.abstract_params).items()}


def _unet_case(name, batch, dtype):
    """The image train step (U-Net, VP denoising score matching) built directly."""
    base, mults, blocks, size = UNETS[name]
    process = dc.VP(0.1, 20.0)
    build = lambda rngs: UNet(3, base, mults, blocks, (1,), rngs=rngs, dtype=dtype)
    mdef, init = ModelDef.create(build, 0)

    def loss(params, key, x):
        module = mdef.module(params)
        return jnp.mean(dc.dsm_loss(key, process, lambda xt, t: module(xt, t), x)), {}

    mesh = mesh_lib.make_mesh({"data": -1})
    tx = optax.adamw(1e-4)
    replicated, batch_sharding = mesh_lib.replicated(mesh), mesh_lib.batch_sharding(mesh, 4)
    params_sharding = jax.tree.unflatten(
        jax.tree.structure(jax.eval_shape(init)),
        jax.tree.leaves(mesh_lib.param_shardings(mdef.abstract_params, (("embed", "fsdp"),), mesh)),
    )
    make_state = lambda: init_train_state(init(), tx, 0)
    shardings = state_shardings(jax.eval_shape(make_state), params_sharding, tx, replicated)
    data = np.random.default_rng(0).uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)
    return {
        "mesh": mesh,
        "state": jax.jit(make_state, out_shardings=shardings)(),
        "step": jit_train_step(
            make_train_step(loss, tx, ema_decay=0.999), shardings, batch_sharding, replicated
        ),
        "batch": global_array(data, batch_sharding),
        "units": batch,
        "unit": "images",
        "params": {"total": mdef.count()},
        "model_flops_per_device": None,  # XLA's count (the U-Net has no loops)
        "settings": {},
    }


def measure(case: dict, *, steps: int) -> dict:
    """Compiles the train step of `case` and times `steps` calls; returns the measurements.

    Args:
      case: dict with "mesh", "state", "step" (jitted, state donated), "batch", "units" (tokens
        or images per step), "unit", "params", "model_flops_per_device" (None: XLA's count),
        "settings".
      steps: timed steps (after two warm-up steps).

    Returns:
      Step time, throughput, FLOPs per device and per step (all devices), MFU (per-device FLOP/s
      over the device's peak; None where the peak is unknown), compiled and device memory.
    """
    state, batch = case["state"], case["batch"]
    with jax.set_mesh(case["mesh"]):
        t0 = time.perf_counter()
        compiled = case["step"].lower(state, batch).compile()
        compile_s = time.perf_counter() - t0
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        xla_flops = float(cost.get("flops", float("nan"))) if cost else float("nan")
        hw_flops = matmul_flops(compiled.as_text())
        flops = case["model_flops_per_device"] or xla_flops
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
    per_device = flops / med if math.isfinite(flops) else float("nan")
    return {
        "params": case["params"],
        "settings": case["settings"],
        "compile_s": compile_s,
        "step_s_median": med,
        "steps_per_s": 1.0 / med,
        f"{case['unit']}_per_s": case["units"] / med,
        "flops_per_device_step": flops,
        "flops_per_step": flops * jax.device_count(),
        "matmul_flops_per_device_step": hw_flops,
        "xla_cost_flops_per_device_step": xla_flops,
        "tflops_per_s_per_device": per_device / 1e12,
        "mfu": per_device / peak if peak else None,
        "peak_tflops_per_device": peak / 1e12 if peak else None,
        "compiled_bytes": peak_bytes,
        "temp_bytes": mem.temp_size_in_bytes if mem is not None else None,
        "device_peak_bytes": stats.get("peak_bytes_in_use"),
        "loss": float(metrics["loss"]),
    }


def _cases(plat: str, quick: bool) -> list[tuple]:
    """(kind, name, seq_len, sequences or images per device, vocab) for the platform."""
    if plat == "cpu":
        cases = [
            ("transformer", "tiny-1M", 256, 32, 256),
            ("transformer", "tiny-1M", 256, 8, GPT2_VOCAB),
            ("transformer", "small-20M", 256, 16, 256),
            ("unet", "unet-2M-32px", None, 16, None),
        ]
        return [c for c in cases if c[1] != "small-20M"] if quick else cases
    cases = [
        ("transformer", "small-20M", 1024, 64, 256),
        ("transformer", "owt_small", 1024, 32, 256),
        ("transformer", "owt_small", 1024, 32, GPT2_VOCAB),
        ("transformer", "owt_small", 4096, 8, GPT2_VOCAB),
        ("unet", "unet-35M-32px", None, 256, None),
    ]
    return cases[2:3] if quick else cases


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smallest sizes only")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--only", default="", help="comma-separated model names to run")
    parser.add_argument("--remat", default=None, help="override model.remat (text cases)")
    parser.add_argument("--attention", default=None, help="override model.attention")
    parser.add_argument("--loss_vocab_chunk", type=int, default=None)
    parser.add_argument("--output", default="", help="JSON path (default: results/...)")
    args = parser.parse_args()
    # A rerun loads the compiled programs from JAX's persistent cache (timings exclude compiles).
    enable_compilation_cache()
    plat = jax.default_backend()
    dtype_name = (
        args.dtype if args.dtype != "auto" else ("float32" if plat == "cpu" else "bfloat16")
    )
    dtype = jnp.bfloat16 if dtype_name == "bfloat16" else jnp.float32
    overrides = {
        "model.remat": args.remat,
        "model.attention": args.attention,
        "train.loss_vocab_chunk": args.loss_vocab_chunk,
    }
    only = {n.strip() for n in args.only.split(",") if n.strip()}
    rows = []
    n_dev = jax.device_count()
    for kind, name, seq_len, per_device, vocab in _cases(plat, args.quick):
        if only and name not in only:
            continue
        batch = per_device * n_dev
        with tempfile.TemporaryDirectory() as workdir:
            case = (
                _transformer_case(name, seq_len, batch, vocab, dtype_name, overrides, workdir)
                if kind == "transformer"
                else _unet_case(name, batch, dtype)
            )
            result = measure(case, steps=args.steps)
        del case
        result.update(
            model=name, kind=kind, seq_len=seq_len, batch=batch, vocab=vocab, dtype=dtype_name
        )
        rows.append(result)
        rate = result.get("tokens_per_s") or result.get("images_per_s")
        unit = "tok/s" if kind == "transformer" else "img/s"
        mfu = f"{100 * result['mfu']:.1f}%" if result["mfu"] else "-"
        mem = result["device_peak_bytes"] or result["compiled_bytes"] or 0
        print(
            f"{name:14s} L={seq_len or '-':>5} B={batch:4d} V={vocab or '-':>6} "
            f"params={result['params']['total'] / 1e6:6.1f}M "
            f"step={1e3 * result['step_s_median']:8.1f} ms  {rate:10.0f} {unit}  "
            f"{result['tflops_per_s_per_device']:7.2f} TFLOP/s/dev  MFU={mfu:>6}  "
            f"mem={mem / 2**30:.2f} GiB",
            flush=True,
        )
    out = {
        "platform": plat,
        "device_kind": jax.devices()[0].device_kind,
        "device_count": n_dev,
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "mfu_formula": "flops_per_device_step / step_s_median / peak_bf16_flops_per_device; "
        "transformer flops_per_device_step = analytic model FLOPs / device_count",
        "rows": rows,
    }
    path = args.output or os.path.join(RESULTS, f"train_throughput_{plat}.json")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(out, f, indent=2, default=str)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
