"""Discrete samplers against an exactly enumerable target, plus transformer sampling throughput.

The target is a random Markov chain over V^L sequences (V = 4, L = 4: 256 sequences), so the
exact denoiser and concrete score of every process come from enumeration
(`diffax.discrete.EnumeratedTarget`). For each process, sampler and number of steps the script
draws n sequences and reports total variation and KL(empirical || target) against the exact
law, the NFE actually used and the wall time; the TV / KL that Monte-Carlo noise alone gives
with n exact samples is stated next to them. It then times sampling a [64, 1024] batch with a
small `diffax.nn.DiffusionTransformer`.

    python -m experiments.benchmarks.discrete_samplers          # full run (~20-30 min on CPU)
    python -m experiments.benchmarks.discrete_samplers --quick  # smoke run (~3 min)

Writes experiments/benchmarks/results/discrete_samplers.json and discrete_samplers.png.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import time

import jax
import numpy as np

import diffax.discrete as dd

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
STEPS = (2, 4, 8, 16, 32, 64, 128)
QUICK_STEPS = (2, 8, 32)


def random_generator(size: int, seed: int) -> np.ndarray:
    """A dense random rate matrix (exit rates of order 1-3, so several jumps happen per unit)."""
    rng = np.random.default_rng(seed)
    q = rng.exponential(size=(size, size))
    np.fill_diagonal(q, 0.0)
    np.fill_diagonal(q, -q.sum(axis=1))
    return q


def configurations(vocab: int, seed: int):
    """(process label, process, sampler, prediction, options) for every combination run."""
    masked = dd.Masked(vocab)
    # The masked concrete score vanishes where alpha = 0, so score-based sampling of the masked
    # process uses the log-linear schedule (alpha(1) = 1e-3), as in SEDD.
    masked_ll = dd.Masked(vocab, dd.LogLinearSchedule(1e-3))
    uniform = dd.Uniform(vocab)
    general = dd.General(random_generator(vocab, seed + 1))
    out = [
        ("masked", masked, "ancestral", "denoiser", {}),
        ("masked", masked, "euler", "denoiser", {}),
        ("masked", masked, "tau_leaping", "denoiser", {}),
        ("masked-loglinear", masked_ll, "analytic", "concrete_score", {}),
        ("masked", masked, "first_hitting", "denoiser", {}),
        ("masked", masked, "pc", "denoiser", {}),
        ("masked", masked, "remdm", "denoiser", {}),
        ("masked", masked, "confidence", "denoiser", {"confidence": "prob"}),
        ("masked", masked, "confidence", "denoiser", {"confidence": "margin"}),
    ]
    for label, process in (("uniform", uniform), ("general", general)):
        out += [
            (label, process, "ancestral", "denoiser", {}),
            (label, process, "euler", "denoiser", {}),
            (label, process, "tau_leaping", "denoiser", {}),
            (label, process, "analytic", "concrete_score", {}),
            (label, process, "pc", "denoiser", {}),
        ]
    return out


def run_one(target, process, sampler, prediction, options, num_steps, n, key):
    """Compiles and runs one sampler; returns a result row."""
    model = target.denoiser(process) if prediction == "denoiser" else target.concrete_score(process)
    shape = (n, target.length)

    def draw(k):
        return dd.sample(
            k,
            process,
            model,
            shape,
            sampler=sampler,
            num_steps=num_steps,
            prediction=prediction,
            **options,
        )

    t0 = time.perf_counter()
    compiled = jax.jit(draw).lower(key).compile()
    t1 = time.perf_counter()
    x, info = compiled(key)
    x = np.asarray(jax.block_until_ready(x))
    t2 = time.perf_counter()
    return {
        "steps": num_steps,
        "tv": target.total_variation(x),
        "kl": target.kl_divergence(x),
        "nfe": int(info["nfe"]),
        "compile_s": t1 - t0,
        "run_s": t2 - t1,
    }


def transformer_throughput(batch: int, length: int, num_steps: int, repeats: int):
    """Tokens/s of sampling [batch, length] with a small DiffusionTransformer (random weights)."""
    from flax import nnx

    from diffax.nn import DiffusionTransformer

    vocab = 256
    rows = []
    for label, process, sampler in (
        ("masked", dd.Masked(vocab), "ancestral"),
        ("masked", dd.Masked(vocab), "confidence"),
        ("uniform", dd.Uniform(vocab), "euler"),
    ):
        model = DiffusionTransformer(
            process.num_input_ids,
            vocab,
            length,
            dim=128,
            depth=2,
            num_heads=4,
            rngs=nnx.Rngs(0),
        )
        graphdef, state = nnx.split(model)

        def draw(state, key, process=process, sampler=sampler):
            net = nnx.merge(graphdef, state)
            return dd.sample(
                key, process, net, (batch, length), sampler=sampler, num_steps=num_steps
            )

        fn = jax.jit(draw)
        key = jax.random.key(0)
        t0 = time.perf_counter()
        jax.block_until_ready(fn(state, key))
        compile_and_first = time.perf_counter() - t0
        times = []
        for r in range(repeats):
            t0 = time.perf_counter()
            x, info = fn(state, jax.random.fold_in(key, r + 1))
            jax.block_until_ready(x)
            times.append(time.perf_counter() - t0)
        best = min(times)
        rows.append(
            {
                "process": label,
                "sampler": sampler,
                "batch": batch,
                "length": length,
                "num_steps": num_steps,
                "nfe": int(info["nfe"]),
                "seconds": best,
                "tokens_per_s": batch * length / best,
                "ms_per_nfe": 1e3 * best / int(info["nfe"]),
                "compile_and_first_s": compile_and_first,
            }
        )
        print(
            f"  {label:8s} {sampler:12s} [{batch}, {length}] {num_steps} steps: {best:.2f} s, "
            f"{batch * length / best:,.0f} tokens/s ({1e3 * best / int(info['nfe']):.0f} ms/NFE)",
            flush=True,
        )
    return rows


def plot(results, noise, steps, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ["masked", "uniform", "general"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5), sharey=True)
    for ax, label in zip(axes, labels, strict=True):
        for row in results:
            if not row["process"].startswith(label):
                continue
            tv = [r["tv"] for r in row["runs"]]
            name = f"{row['sampler']} ({row['prediction'].replace('concrete_score', 'score')})"
            ax.loglog(steps, tv, marker="o", ms=3, label=name)
        ax.axhline(noise["tv"][0], color="k", ls="--", lw=1, label="sampling noise (exact)")
        ax.set_title(f"{label} process")
        ax.set_xlabel("steps")
        ax.set_xscale("log", base=2)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("total variation to the exact law")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few steps, fewer samples")
    parser.add_argument("--vocab", type=int, default=4)
    parser.add_argument("--length", type=int, default=4)
    parser.add_argument("--samples", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-transformer", action="store_true")
    args = parser.parse_args(argv)
    steps = QUICK_STEPS if args.quick else STEPS
    n = args.samples or (2**13 if args.quick else 2**16)
    target = dd.EnumeratedTarget.markov_chain(args.seed, args.vocab, args.length, 0.5)
    noise = target.sampling_noise(n, repeats=50)
    print(
        f"target: Markov chain, V={args.vocab}, L={args.length} ({target.num_sequences} "
        f"sequences, entropy {target.entropy():.3f} nats); n={n} samples per run\n"
        f"sampling noise alone (n exact draws): TV {noise['tv'][0]:.4f} +- {noise['tv'][1]:.4f},"
        f" KL {noise['kl'][0]:.4f} +- {noise['kl'][1]:.4f}",
        flush=True,
    )
    results = []
    key = jax.random.key(args.seed)
    start = time.perf_counter()
    for label, process, sampler, prediction, options in configurations(args.vocab, args.seed):
        runs = [
            run_one(target, process, sampler, prediction, options, s, n, jax.random.fold_in(key, s))
            for s in steps
        ]
        name = sampler + "".join(f"[{v}]" for v in options.values())
        results.append({"process": label, "sampler": name, "prediction": prediction, "runs": runs})
        tvs = " ".join(f"{r['tv']:.4f}" for r in runs)
        print(
            f"{label:17s} {name:18s} {prediction:14s} TV {tvs} | NFE {runs[-1]['nfe']:4d} | "
            f"{1e3 * runs[-1]['run_s'] / max(runs[-1]['nfe'], 1):.1f} ms/NFE",
            flush=True,
        )
    sampler_minutes = (time.perf_counter() - start) / 60

    print(
        "\nTV / KL(empirical || exact) by steps (noise floor: TV "
        f"{noise['tv'][0]:.4f}, KL {noise['kl'][0]:.4f})"
    )
    header = "process           sampler            pred   " + "".join(f"{s:>15d}" for s in steps)
    print(header)
    for row in results:
        cells = "".join(f"{r['tv']:7.4f}/{r['kl']:7.4f}" for r in row["runs"])
        pred = "score" if row["prediction"] == "concrete_score" else "den"
        print(f"{row['process']:17s} {row['sampler']:18s} {pred:6s} {cells}")
    print(
        "\nNFE used: "
        + "; ".join(
            f"{row['process']}/{row['sampler']}: " + ",".join(str(r["nfe"]) for r in row["runs"])
            for row in results
            if row["sampler"] in ("pc", "first_hitting")
        )
        + " (all others: NFE = steps)"
    )

    throughput = []
    if not args.skip_transformer:
        print("\nSampling throughput, DiffusionTransformer(dim=128, depth=2, heads=4), V=256:")
        batch, length = (8, 256) if args.quick else (64, 1024)
        throughput = transformer_throughput(batch, length, 4 if args.quick else 16, 2)

    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {
        "target": {
            "kind": "markov_chain",
            "vocab": args.vocab,
            "length": args.length,
            "seed": args.seed,
            "concentration": 0.5,
            "entropy_nats": target.entropy(),
        },
        "samples_per_run": n,
        "steps": list(steps),
        "sampling_noise": {"tv_mean_std": noise["tv"], "kl_mean_std": noise["kl"]},
        "results": results,
        "transformer_throughput": throughput,
        "sampler_benchmark_minutes": sampler_minutes,
        "machine": {
            "backend": jax.default_backend(),
            "devices": [str(d) for d in jax.devices()],
            "cpu_count": __import__("os").cpu_count(),
            "python": platform.python_version(),
            "jax": jax.__version__,
        },
        "quick": args.quick,
    }
    suffix = "_quick" if args.quick else ""
    json_path = RESULTS / f"discrete_samplers{suffix}.json"
    json_path.write_text(json.dumps(payload, indent=1))
    png_path = RESULTS / f"discrete_samplers{suffix}.png"
    plot(results, noise, steps, png_path)
    print(f"\nwrote {json_path} and {png_path}")


if __name__ == "__main__":
    main()
