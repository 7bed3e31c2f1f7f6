"""Discrete samplers at a large vocabulary: temporary memory of one jitted sampling run.

Compiles `diffax.discrete.sample` (4 steps, masked process, linear schedule) for B sequences of
length L over a V-token vocabulary with a stand-in network (embedding + bf16 output projection,
so the network itself holds one float32 `[B, L, V]` logits array) and reads XLA's
`memory_analysis()`: the temporary bytes in units of that logits array. Nothing runs; no
accelerator is needed.

  python -m experiments.benchmarks.sampler_memory [--batch 16 --length 1024 --vocab 50257]

Prints a table and writes experiments/benchmarks/results/sampler_memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform

import jax
import jax.numpy as jnp

import diffax.discrete as dd

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
SAMPLERS = ("ancestral", "first_hitting", "remdm", "confidence", "tau_leaping", "euler", "analytic")


def measure(name: str, batch: int, length: int, vocab: int, width: int = 64) -> int:
    """Temporary bytes of a jitted 4-step `dd.sample` with sampler `name`."""
    process = dd.Masked(vocab, dd.LinearSchedule())
    embed = jnp.zeros((vocab + 1, width), jnp.bfloat16)
    head = jnp.zeros((width, vocab), jnp.bfloat16)

    def model(x, t):
        del t
        return (embed[x] @ head).astype(jnp.float32)

    def run(key):
        return dd.sample(key, process, model, (batch, length), sampler=name, num_steps=4)[0]

    compiled = jax.jit(run).lower(jax.random.key(0)).compile()
    return int(compiled.memory_analysis().temp_size_in_bytes)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=50257)
    args = parser.parse_args()
    logits = args.batch * args.length * args.vocab * 4
    rows = []
    print(
        f"B={args.batch} L={args.length} V={args.vocab}: one float32 logits array = "
        f"{logits / 2**30:.2f} GiB"
    )
    print(f"{'sampler':<14} {'temp GiB':>9} {'x logits':>9}")
    for name in SAMPLERS:
        temp = measure(name, args.batch, args.length, args.vocab)
        rows.append({"sampler": name, "temp_bytes": temp, "x_logits": temp / logits})
        print(f"{name:<14} {temp / 2**30:>9.2f} {temp / logits:>9.2f}")
    os.makedirs(RESULTS, exist_ok=True)
    out = {
        "batch": args.batch,
        "length": args.length,
        "vocab": args.vocab,
        "logits_bytes": logits,
        "machine": platform.processor() or platform.machine(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "rows": rows,
    }
    with open(os.path.join(RESULTS, "sampler_memory.json"), "w") as f:
        json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
