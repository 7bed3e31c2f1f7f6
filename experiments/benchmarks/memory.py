"""Memory, FLOPs and HLO size of the real train step, compiled for 8 fake CPU devices.

Builds the train step exactly as `diffax.training` runs it (the task from the config through
`build_task`, the optimizer, shardings and state of `diffax.training.run.Run`, the step of
`diffax.training.step`) from `configs/owt_small.py` ("small": 12 layers, width 768) and
`configs/owt_1b.py` ("1B-class": 24 layers, width 2048), bf16 compute, vocabulary 50,257, on a
(data=2, fsdp=4) mesh of 8 fake CPU devices. Nothing runs: the step is lowered on abstract inputs
(`ShapeDtypeStruct`s for the state and the batch) and compiled, and XLA reports per device:

* temp memory (activations and other buffers live during the step), argument memory (train state
  and batch), output memory (`compiled.memory_analysis()`);
* FLOPs per device: the matmul FLOPs of the compiled program (one device's share) with `while`
  loops counted once per trip (`matmul_flops`; includes remat recomputation), XLA's
  `cost_analysis()` (which counts a loop body once: it under-counts layers under `scan`), and
  the analytic model FLOPs (`model_flops`, what MFU divides);
* collective bytes per device by kind (`collective_bytes`);
* the number of lines of the compiled HLO, and the ratio of a 48-layer to a 12-layer model
  (with layers under `scan` it stays near 1).

"2 x 1024 per device" means 2 sequences of 1024 tokens on each of the 8 devices: a global batch of
16 (the batch is split over data x fsdp = 8 devices). The vocabulary comes from a shape-only data
source (`shape_source`, registered on first use as "vocab_shapes_<V>"): a tokenizer of the
requested size and no data. `--packed` gives it GPT-2's EOS id, so the step also derives segment
ids (packed documents) as a run on prepared shards does.

  python -m experiments.benchmarks.memory                          # every row
  python -m experiments.benchmarks.memory --rows=small_2x1024,hlo_depth --remat=full

Prints a table and writes experiments/benchmarks/results/memory.json (or --output).
"""

from __future__ import annotations

import os

if __name__ == "__main__":
    # The fake devices must exist before JAX initialises its backends (keep the user's other
    # flags). Only as a script: importing this module (train_throughput, tests) changes nothing.
    _flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in _flags:
        os.environ["XLA_FLAGS"] = f"{_flags} --xla_force_host_platform_device_count=8".strip()
    os.environ["JAX_PLATFORMS"] = "cpu"

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from configs import owt_1b, owt_small  # noqa: E402
from diffax.data import SOURCES  # noqa: E402
from diffax.training.checkpoint import abstract_like  # noqa: E402
from diffax.training.run import Run  # noqa: E402
from diffax.training.step import jit_train_step, make_train_step  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
GIB = 2**30
VOCAB = 50_257  # GPT-2's tokenizer
EOS = 50_256  # GPT-2's "<|endoftext|>"
MESH = {"data": 2, "fsdp": 4, "model": 1}

# name: (config module, sequences per device, sequence length, temp-memory target in GiB or None)
ROWS = {
    "small_2x1024": (owt_small, 2, 1024, 2.5),
    "small_1x4096": (owt_small, 1, 4096, 4.0),
    "1b_2x1024": (owt_1b, 2, 1024, 7.0),
    "1b_1x4096": (owt_1b, 1, 4096, None),
    "1b_1x8192": (owt_1b, 1, 8192, 24.0),
}
# HLO size against depth: a narrow model (the line count does not depend on the width).
HLO_DEPTHS = (12, 48)
HLO_RATIO_TARGET = 1.2
HLO_SHAPE = {"dim": 256, "num_heads": 4, "seq_len": 256, "per_device": 1}


class _Tokenizer:
    """A tokenizer that only has a size (the step never encodes or decodes)."""

    def __init__(self, vocab_size: int, eos_id: int | None):
        self.vocab_size, self.eos_id = vocab_size, eos_id

    def encode(self, text: str):
        raise NotImplementedError("a shape-only tokenizer cannot encode")

    def decode(self, ids) -> str:
        raise NotImplementedError("a shape-only tokenizer cannot decode")


class _VocabShapes:
    """A token source with a vocabulary and a sequence length but no data (benchmarks only)."""

    kind = "tokens"
    vocab_size = VOCAB
    eos = None

    def __init__(self, seq_len: int):
        self.example_shape = (seq_len,)
        self.tokenizer = _Tokenizer(self.vocab_size, self.eos)
        self.eos_id = self.eos

    @classmethod
    def from_config(cls, data, seed: int):
        del seed
        return cls(data.seq_len)

    def train_dataset(self, batch_per_process, shard_index, shard_count):
        raise NotImplementedError("a shape-only source has no data")

    def eval_batches(self, batch_size, max_batches):
        return []

    def baselines(self):
        return {}

    def write_samples(self, samples, directory, step):
        raise NotImplementedError("a shape-only source cannot write samples")


def shape_source(vocab_size: int, eos_id: int | None = None) -> str:
    """Registers (once) a data source with `vocab_size` ids and no data; returns its name.

    Args:
      vocab_size: the tokenizer's size (ids in [0, vocab_size)).
      eos_id: the id that ends documents (the task then derives segment ids); None: no EOS.

    Returns:
      The name to put in `config.data.source`.
    """
    name = f"vocab_shapes_{vocab_size}" + ("" if eos_id is None else f"_eos{eos_id}")
    if name not in SOURCES:
        attrs = {"vocab_size": vocab_size, "eos": eos_id}
        SOURCES.register(name)(type(name, (_VocabShapes,), attrs))
    return name


def step_config(
    module,
    *,
    seq_len: int,
    batch_size: int,
    vocab_size: int = VOCAB,
    eos_id: int | None = None,
    mesh: dict[str, int] | None = None,
    overrides: dict[str, object] | None = None,
):
    """The config of `module` with a shape-only vocabulary and the benchmark's sizes.

    Args:
      module: a config module (`configs.owt_small`, `configs.owt_1b`).
      seq_len: sequence length (`data.seq_len`).
      batch_size: global batch (`train.batch_size`).
      vocab_size: tokens of the shape-only source.
      eos_id: its EOS id (None: no document boundaries).
      mesh: {"data", "fsdp", "model"} sizes (None: the config's mesh).
      overrides: {"section.key": value} set after the above (a None value keeps the config's).

    Returns:
      The locked `ml_collections.ConfigDict`.
    """
    config = module.get_config()
    config.data.source = shape_source(vocab_size, eos_id)
    config.data.path = ""
    config.data.tokenizer_path = ""
    config.data.seq_len = seq_len
    config.data.num_workers = 0
    config.train.batch_size = batch_size
    config.train.accum_steps = 1
    for axis, size in (mesh or {}).items():
        config.mesh[axis] = size
    for key, value in (overrides or {}).items():
        if value is not None:
            section, name = key.split(".")
            config[section][name] = value
    return config


def _cli_overrides(args) -> dict[str, object]:
    return {
        "model.attention": args.attention,
        "model.remat": args.remat,
        "model.scan_layers": args.scan,
        "train.loss_vocab_chunk": args.loss_vocab_chunk,
    }


def row_config(module, per_device: int, seq_len: int, args, **model):
    """A memory row's config: `per_device` sequences on each of the 8 devices of `MESH`."""
    overrides = _cli_overrides(args)
    overrides.update({f"model.{k}": v for k, v in model.items()})
    return step_config(
        module,
        seq_len=seq_len,
        batch_size=per_device * jax.device_count(),
        eos_id=EOS if args.packed else None,
        mesh=MESH,
        overrides=overrides,
    )


COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "collective-permute", "all-to-all")
_DTYPE_BYTES = {
    "pred": 1, "s4": 1, "u4": 1, "s8": 1, "u8": 1, "f8e4m3fn": 1, "f8e5m2": 1,
    "s16": 2, "u16": 2, "f16": 2, "bf16": 2,
    "s32": 4, "u32": 4, "f32": 4,
    "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16,
}  # fmt: skip
_SHAPE = re.compile(r"\b([a-z][a-z0-9]*)\[([0-9,]*)\]")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%([\w.\-]+)\s*=\s*(.+?)\s+([a-z][a-z0-9\-]*)\((.*)$")
_COMPUTATION = re.compile(r"^(ENTRY\s+)?%([\w.\-]+)\s.*\{\s*$")
_CALLS = re.compile(
    r"\b(body|condition|to_apply|calls|true_computation|false_computation)=%([\w.\-]+)"
)
_BRANCHES = re.compile(r"branch_computations=\{([^}]*)\}")
_TRIP_COUNT = re.compile(r'"known_trip_count":\{"n":"(\d+)"\}')


def type_bytes(hlo_type: str) -> int:
    """Bytes of an HLO type string: an array `f32[4,8]{1,0}` or a tuple of arrays."""
    total = 0
    for dtype, dims in _SHAPE.findall(hlo_type):
        if dtype in _DTYPE_BYTES:
            total += _DTYPE_BYTES[dtype] * math.prod(int(d) for d in dims.split(",") if d)
    return total


def _operands(rest: str) -> list[str]:
    """Names of the operands in the text after `op(`, up to its matching parenthesis."""
    depth = 1
    for i, ch in enumerate(rest):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth == 0:
            return re.findall(r"%([\w.\-]+)", rest[:i])
    return re.findall(r"%([\w.\-]+)", rest)


class HloModule:
    """The instructions of a compiled HLO module and how often each computation runs.

    A computation called as a `while` body runs `known_trip_count` times per call (layers under
    `scan`); fusions, calls, reductions and conditional branches once per call (a branch is
    counted as if taken).

    Args:
      hlo_text: `compiled.as_text()` of a jitted function (one device's program).
    """

    def __init__(self, hlo_text: str):
        self.types: dict[str, str] = {}
        self.instructions: dict[str, list[tuple[str, str, str]]] = {}
        self._callers: dict[str, list[tuple[str, int]]] = {}
        self._runs: dict[str, int] = {}
        self.entry, current = None, None
        for line in hlo_text.splitlines():
            header = _COMPUTATION.match(line)
            if header:
                current = header.group(2)
                self.instructions[current] = []
                if header.group(1):
                    self.entry = current
                continue
            match = _INSTRUCTION.match(line) if current else None
            if not match:
                continue
            name, hlo_type, op, rest = match.groups()
            self.types[name] = hlo_type
            self.instructions[current].append((hlo_type, op, rest))
            trip = _TRIP_COUNT.search(rest)
            for role, callee in _CALLS.findall(rest):
                factor = int(trip.group(1)) if role == "body" and trip else 1
                self._callers.setdefault(callee, []).append((current, factor))
            for branches in _BRANCHES.findall(rest):
                for callee in re.findall(r"%([\w.\-]+)", branches):
                    self._callers.setdefault(callee, []).append((current, 1))

    def runs(self, computation: str) -> int:
        """How many times `computation` runs per execution of the entry computation."""
        if computation == self.entry:
            return 1
        if computation not in self._runs:
            self._runs[computation] = 0  # guards against cycles (valid HLO has none)
            self._runs[computation] = sum(
                self.runs(c) * f for c, f in self._callers.get(computation, [])
            )
        return self._runs[computation]

    def operand_types(self, rest: str) -> list[str]:
        """Types of the operands in the text after `op(` (unknown names: empty)."""
        return [self.types.get(o, "") for o in _operands(rest)]


def collective_bytes(hlo_text: str) -> dict[str, int]:
    """Bytes moved by the collectives of a compiled (per-device) HLO module, by kind.

    Each all-reduce, all-gather, reduce-scatter, collective-permute and all-to-all counts the
    bytes of its operands plus its result (an async `*-start` counts its result tuple, which
    holds both; `*-done` is not counted again), times the number of times its computation runs
    (`HloModule.runs`: a collective in a `scan` over layers counts once per layer).

    Args:
      hlo_text: `compiled.as_text()` of a jitted function.

    Returns:
      {kind: bytes} for every kind in `COLLECTIVES`, plus "total".
    """
    module = HloModule(hlo_text)
    totals = dict.fromkeys(COLLECTIVES, 0)
    for comp, body in module.instructions.items():
        for hlo_type, op, rest in body:
            kind = op.removesuffix("-start")
            if kind not in totals or op.endswith("-done"):
                continue
            moved = type_bytes(hlo_type)
            if not op.endswith("-start"):
                moved += sum(type_bytes(t) for t in module.operand_types(rest))
            totals[kind] += moved * module.runs(comp)
    totals["total"] = sum(totals[k] for k in COLLECTIVES)
    return totals


def matmul_flops(hlo_text: str) -> int:
    """FLOPs of the `dot` instructions of a compiled HLO module, loops counted per trip.

    XLA's `cost_analysis()` counts a `while` body once, whatever its trip count, so it
    under-counts a model whose layers run under `scan` by about the number of layers. Here each
    dot counts 2 x (result elements) x (contracted elements) times `HloModule.runs` of its
    computation. Includes rematerialised (recomputed) matmuls; convolutions are not counted.

    Args:
      hlo_text: `compiled.as_text()` of a jitted function (one device's program).

    Returns:
      The FLOPs of one execution.
    """
    module = HloModule(hlo_text)
    total = 0
    for comp, body in module.instructions.items():
        for hlo_type, op, rest in body:
            if op != "dot":
                continue
            lhs = _SHAPE.search(module.operand_types(rest)[0] or "")
            contracting = re.search(r"lhs_contracting_dims=\{([0-9,]*)\}", rest)
            if lhs is None or contracting is None:
                continue
            dims = [int(d) for d in lhs.group(2).split(",") if d]
            inner = math.prod(dims[int(i)] for i in contracting.group(1).split(",") if i)
            out = _SHAPE.search(hlo_type)
            elements = math.prod(int(d) for d in out.group(2).split(",") if d) if out else 0
            total += 2 * elements * inner * module.runs(comp)
    return total


def model_flops(
    dim: int, depth: int, mlp_ratio: float, seq_len: int, vocab: int, tokens: int
) -> float:
    """Training FLOPs of a `DiffusionTransformer` on `tokens` tokens (model FLOPs, for MFU).

    Forward + backward = 3 x forward; forward per token: 2 x the matmul parameters (per layer
    4 dim^2 for q, k, v and the output projection, 2 mlp_ratio dim^2 for the MLP; dim x V for
    the output head) plus 4 x L x dim per layer for the attention scores and values (Kaplan et
    al. 2020; PaLM, Chowdhery et al. 2022, appendix B). adaLN (per sequence, not per token) and
    recomputation under remat are not counted.

    Args:
      dim, depth, mlp_ratio: the model's width, number of blocks and MLP ratio.
      seq_len: sequence length L (attention cost per token grows with it).
      vocab: output classes V.
      tokens: tokens in the step (global batch x L).

    Returns:
      The FLOPs of one training step on `tokens` tokens.
    """
    matmul_params = depth * (4 + 2 * mlp_ratio) * dim**2 + dim * vocab
    attention = depth * 4 * seq_len * dim
    return 3.0 * (2 * matmul_params + attention) * tokens


def _param_counts(run: Run) -> dict[str, int]:
    counts = {"total": run.task.model_def.count()}
    try:
        from diffax.nn.transformer import parameter_counts
    except ImportError:  # a model without grouped counts: the total only
        return counts
    return {k: int(v) for k, v in parameter_counts(run.task.model_def.abstract_params).items()}


def _model_flops(config, vocab: int) -> float:
    m, seq_len = config.model, config.data.seq_len
    tokens = config.train.batch_size * seq_len
    return model_flops(m.dim, m.depth, m.mlp_ratio, seq_len, vocab, tokens)


def compile_step(config) -> dict:
    """Lowers and compiles the train step of `config` on abstract inputs; returns measurements.

    Returns:
      A dict with temp/argument/output/alias bytes per device, FLOPs per device, HLO lines,
      compile seconds and parameter counts.
    """
    with tempfile.TemporaryDirectory() as workdir:
        run = Run(config, workdir, for_training=True)
        t = config.train
        step = jit_train_step(
            make_train_step(run.task.loss, run.tx, ema_decay=t.ema_decay, accum_steps=1),
            run.state_sharding,
            run.batch_sharding,
            run.replicated,
        )
        state = abstract_like(run.abstract_state, run.state_sharding)
        batch = jax.ShapeDtypeStruct(
            (t.batch_size, config.data.seq_len), jnp.int32, sharding=run.batch_sharding
        )
        start = time.perf_counter()
        with jax.set_mesh(run.mesh):
            compiled = step.lower(state, batch).compile()
        compile_s = time.perf_counter() - start
        mem = compiled.memory_analysis()
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        hlo = compiled.as_text()
        return {
            "temp_bytes": int(mem.temp_size_in_bytes),
            "argument_bytes": int(mem.argument_size_in_bytes),
            "output_bytes": int(mem.output_size_in_bytes),
            "alias_bytes": int(mem.alias_size_in_bytes),
            # matmul FLOPs with loops counted per trip (XLA's count sees a scan body once)
            "flops_per_device": matmul_flops(hlo),
            "xla_cost_flops_per_device": float(cost.get("flops", "nan")) if cost else None,
            "model_flops_per_device": _model_flops(config, run.task.vocab_size)
            / jax.device_count(),
            "hlo_lines": len(hlo.splitlines()),
            "collective_bytes": collective_bytes(hlo),
            "compile_s": compile_s,
            "params": _param_counts(run),
        }


def _model_summary(config) -> dict:
    m = config.model
    keys = ("dim", "depth", "num_heads", "cond_dim", "dtype", "attention", "scan_layers", "remat")
    summary = {k: m[k] for k in keys}
    summary.update(
        seq_len=config.data.seq_len,
        global_batch=config.train.batch_size,
        loss=config.train.loss,
        loss_vocab_chunk=config.train.loss_vocab_chunk,
        moment_dtype=config.optimizer.moment_dtype,
        vocab=int(config.data.source.split("_")[2]),
        packed="_eos" in config.data.source,
    )
    return summary


def _machine() -> dict:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "platform": jax.default_backend(),
        "device_kind": jax.devices()[0].device_kind,
        "device_count": jax.device_count(),
        "jax": jax.__version__,
        "git_commit": commit,
        "mesh": MESH,
    }


def _print_row(name: str, r: dict) -> None:
    target = r.get("target_temp_gib")
    verdict = "-" if target is None else ("PASS" if r["pass"] else "FAIL")
    print(
        f"{name:14s} temp={r['temp_bytes'] / GIB:7.2f} GiB  args={r['argument_bytes'] / GIB:6.2f} "
        f"GiB  out={r['output_bytes'] / GIB:6.2f} GiB  "
        f"TFLOP/dev={r['flops_per_device'] / 1e12:7.2f}"
        f"  HLO={r['hlo_lines']:7d}  target<={target if target is not None else '-'} GiB "
        f"{verdict}  params={r['params']['total'] / 1e6:.0f}M  compile={r['compile_s']:.0f}s",
        flush=True,
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--rows",
        default=",".join([*ROWS, "hlo_depth"]),
        help=f"comma-separated rows: {', '.join([*ROWS, 'hlo_depth'])}",
    )
    parser.add_argument("--remat", default=None, help="override model.remat (none, full, ...)")
    parser.add_argument(
        "--scan", default=None, choices=["true", "false"], help="override model.scan_layers"
    )
    parser.add_argument("--attention", default="xla", help="model.attention (CPU: xla)")
    parser.add_argument("--loss_vocab_chunk", type=int, default=None)
    parser.add_argument(
        "--packed", action="store_true", help="documents end with EOS: segment ids in attention"
    )
    parser.add_argument("--output", default=os.path.join(RESULTS, "memory.json"))
    args = parser.parse_args()
    if args.scan is not None:
        args.scan = args.scan == "true"
    names = [n.strip() for n in args.rows.split(",") if n.strip()]
    unknown = [n for n in names if n not in ROWS and n != "hlo_depth"]
    if unknown:
        raise ValueError(
            f"--rows: unknown {unknown}; allowed values: {', '.join([*ROWS, 'hlo_depth'])}"
        )
    if jax.device_count() != 8:
        raise ValueError(f"needs 8 devices, found {jax.device_count()} (XLA_FLAGS was set late?)")
    rows = {}
    for name in names:
        if name == "hlo_depth":
            continue
        module, per_device, seq_len, target = ROWS[name]
        config = row_config(module, per_device, seq_len, args)
        r = compile_step(config)
        r.update(
            config=_model_summary(config),
            sequences_per_device=per_device,
            target_temp_gib=target,
            temp_gib=r["temp_bytes"] / GIB,
        )
        r["pass"] = None if target is None else r["temp_gib"] <= target
        rows[name] = r
        _print_row(name, r)
    hlo = None
    if "hlo_depth" in names:
        lines = {}
        for depth in HLO_DEPTHS:
            config = row_config(
                owt_small,
                HLO_SHAPE["per_device"],
                HLO_SHAPE["seq_len"],
                args,
                dim=HLO_SHAPE["dim"],
                num_heads=HLO_SHAPE["num_heads"],
                depth=depth,
            )
            r = compile_step(config)
            lines[depth] = r["hlo_lines"]
            print(f"hlo depth={depth:3d}: {r['hlo_lines']} lines (compile {r['compile_s']:.0f}s)")
        ratio = lines[HLO_DEPTHS[1]] / lines[HLO_DEPTHS[0]]
        hlo = {
            "config": _model_summary(config),
            "lines": {str(d): n for d, n in lines.items()},
            "ratio": ratio,
            "target_ratio": HLO_RATIO_TARGET,
            "pass": ratio <= HLO_RATIO_TARGET,
        }
        verdict = "PASS" if hlo["pass"] else "FAIL"
        print(
            f"HLO lines {HLO_DEPTHS[1]} / {HLO_DEPTHS[0]} layers = {ratio:.2f} (<= 1.2: {verdict})"
        )
    out = {
        "machine": _machine(),
        "options": {k: v for k, v in vars(args).items() if k != "output"},
        "rows": rows,
        "hlo_depth": hlo,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(out, f, indent=2, default=str)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
