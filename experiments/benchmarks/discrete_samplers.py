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
    python -m experiments.benchmarks.discrete_samplers --section step_speed  # wall per step only

The "step_speed" section times one masked step (ancestral, remdm with eta = 0, first_hitting)
before (HEAD's code path before issue 12, kept here) and after, at V = 4 and V = 1024, L = 256,
and the share of a V = 1024 step spent drawing random words; all of a case's functions run
interleaved over `--repeats` rounds (default 15) and ancestral / remdm is the median of the
per-round ratios. `--section step_speed` runs only it and adds its key to the existing JSON.

Writes experiments/benchmarks/results/discrete_samplers.json and discrete_samplers.png.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import time

import jax
import jax.numpy as jnp
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


# -- Wall per step of the masked samplers (issue 12) ------------------------------------------


def _head_ancestral_step(model, key, x, state, t, s):
    """HEAD's masked ancestral step (before issue 12): the [B, L, V + 1] posterior and a race."""
    logits, state = model.denoiser_logits(state, x, t)
    return dd.sample_categorical(key, model.process.posterior_logits(x, s, t, logits)), state


def _head_remdm_step(model, key, x, state, t, s, eta=0.0):
    """HEAD's remdm "cap" step: the ancestral race, a second race for x0, float32 uniforms."""
    process = model.process
    a_t = process.alpha(t)
    one_minus_s = process.schedule.one_minus_alpha(s)
    sigma = jnp.minimum(eta, jnp.minimum(1.0, one_minus_s / a_t))
    p_extra = jnp.where(one_minus_s > 0, sigma * a_t / jnp.maximum(one_minus_s, 1e-30), 1.0)
    masked = x == process.mask_id
    logits, state = model.denoiser_logits(state, x, t)
    x_s = dd.sample_categorical(key, process.posterior_logits(x, s, t, logits))
    k_x0, k_extra, k_remask = (jax.random.fold_in(key, i) for i in (1, 2, 3))
    x0 = dd.sample_categorical(k_x0, logits)
    extra = (x_s == process.mask_id) & (jax.random.uniform(k_extra, x.shape) < p_extra)
    x_s = jnp.where(masked & extra, x0, x_s)
    remask = ~masked & (jax.random.uniform(k_remask, x.shape) < sigma)
    return jnp.where(remask, process.mask_id, x_s).astype(jnp.int32), state


def _head_first_hitting_step(model, key, x, state, t_grid, s_grid):
    """HEAD's first-hitting step: races over L (position) and V (value)."""
    process, schedule = model.process, model.process.schedule
    batch, length = x.shape
    masked = x == process.mask_id
    n = jnp.sum(masked, axis=-1)
    active = n > 0
    t = state["t"]
    k_time, k_pos, k_val = jax.random.split(key, 3)
    logits, state = model.denoiser_logits(state, x, t)
    pos = dd.sample_categorical(k_pos, jnp.where(masked, 0.0, -jnp.inf))
    value = dd.sample_categorical(k_val, logits)
    hit = (jnp.arange(length)[None, :] == pos[:, None]) & active[:, None]
    frac = jax.random.uniform(k_time, (batch,)) ** (1.0 / jnp.maximum(n, 1).astype(jnp.float32))
    s = jnp.clip(schedule.inverse_alpha(1.0 - schedule.one_minus_alpha(t) * frac), 0.0, 1.0)
    return jnp.where(hit, value, x), {**state, "t": jnp.where(active, s, t)}


def _interleaved_ms(fns: dict, rounds: int) -> dict:
    """Wall (ms) of each compiled `(fn, args)` in `fns`, called in turn for `rounds` rounds.

    One warm-up call each; then every round calls every function once, the order rotated by one
    each round, so load that comes and goes (a shared machine) falls on all of them alike.
    Returns `{name: [ms per round]}`.
    """
    for fn, args in fns.values():
        jax.block_until_ready(fn(*args))
    names = list(fns)
    times = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn, args = fns[name]
            t0 = time.perf_counter()
            jax.block_until_ready(fn(*args))
            times[name].append(1e3 * (time.perf_counter() - t0))
    return times


def _stand_in_network(vocab: int, dim: int = 64):
    """A fixed-cost stand-in denoiser: a random embedding of V + 1 ids and a linear head."""
    k_emb, k_head = jax.random.split(jax.random.key(7))
    emb = jax.random.normal(k_emb, (vocab + 1, dim)) / np.sqrt(dim)
    head = 3.0 * jax.random.normal(k_head, (dim, vocab))

    def model_fn(x, t):
        del t
        return emb[x] @ head

    return model_fn


def step_speed(repeats: int, quick: bool, seed: int = 0):
    """Wall per step (compile excluded) of masked ancestral, remdm and first_hitting, before
    (HEAD's code path, kept above) and after, at V = 4 (exact denoiser) and V = 1024, L = 256
    (stand-in network); and the random-bit share of a V = 1024 step.

    All functions of a case run interleaved (`_interleaved_ms`, `repeats` rounds); each reports
    its median, and ancestral / remdm is also the median of the per-round ratios, which is
    robust to load that changes between rounds. A timed step returns its state too, so the
    model's non-finite check is part of it, as in a sampling loop."""
    from diffax.discrete.categorical import PASS_FRACTION
    from diffax.discrete.samplers.step import Model

    cases = [(4, 4, 5_000 if quick else 50_000), (1024, 256, 8 if quick else 64)]
    rows = []
    for vocab, length, batch in cases:
        process = dd.Masked(vocab)
        if vocab <= 8:
            model_fn = dd.EnumeratedTarget.markov_chain(seed, vocab, length, 0.5).denoiser(process)
            net = "exact enumerated denoiser"
        else:
            model_fn = _stand_in_network(vocab)
            net = "embedding + linear head (dim 64)"
        shape = (batch, length)
        model = Model(process, model_fn, "denoiser", shape)
        k_x, k_m, k_step = jax.random.split(jax.random.key(seed), 3)
        x0 = jax.random.randint(k_x, shape, 0, vocab)
        x = process.sample_marginal(k_m, x0, jnp.float32(0.5))  # half the positions masked
        t, s = jnp.float32(0.5), jnp.float32(0.5 - 1.0 / 128)
        ts = jnp.asarray([1.0, 0.5, 0.0])
        steps = {
            "ancestral": (dd.ancestral(), _head_ancestral_step),
            "remdm[eta=0]": (dd.remdm(eta=0.0), _head_remdm_step),
            "first_hitting": (dd.first_hitting(), _head_first_hitting_step),
        }
        fns = {"network only": (jax.jit(lambda x: model_fn(x, jnp.full(shape[:1], t))), (x,))}
        for name, (step, head_step) in steps.items():
            state = step.init(model, x, ts)
            for label, body in (("before", head_step), ("after", step.step)):
                fn = jax.jit(lambda k, x, state, body=body: body(model, k, x, state, t, s))
                fns[f"{name}/{label}"] = (fn, (k_step, x, state))
        if vocab > 8:
            # The random words each path draws per step, compiled alone: HEAD's race over the
            # V + 1 posterior states; now a reveal word per position and four words per row of
            # each pass of gathered rows (one pass of 1 / PASS_FRACTION of the positions here).
            n_rows = -(-batch * length // PASS_FRACTION)
            bits = {
                "before": lambda k: jax.random.bits(k, shape + (vocab + 1,), jnp.uint32),
                "after": lambda k: (
                    jax.random.bits(k, shape, jnp.uint32),
                    jax.random.bits(k, (4, n_rows), jnp.uint32),
                ),
            }
            for label, f in bits.items():
                fns[f"random bits/{label}"] = (jax.jit(f), (k_step,))
        times = _interleaved_ms(fns, repeats)
        med = {name: float(np.median(v)) for name, v in times.items()}
        row = {
            "vocab": vocab,
            "length": length,
            "batch": batch,
            "network": net,
            "rounds": repeats,
            "ms": {"network only": {"after": med["network only"]}},
        }
        for name in steps:
            row["ms"][name] = {label: med[f"{name}/{label}"] for label in ("before", "after")}
        row["ancestral_over_remdm"] = {
            label: {
                "ratio_of_medians": med[f"ancestral/{label}"] / med[f"remdm[eta=0]/{label}"],
                "median_round_ratio": float(
                    np.median(
                        np.asarray(times[f"ancestral/{label}"])
                        / np.asarray(times[f"remdm[eta=0]/{label}"])
                    )
                ),
            }
            for label in ("before", "after")
        }
        if vocab > 8:
            row["random_bits_ms"] = {label: med[f"random bits/{label}"] for label in bits}
            row["random_bit_share"] = {
                label: row["random_bits_ms"][label] / row["ms"]["ancestral"][label]
                for label in bits
            }
        rows.append(row)
    print(
        f"\nWall per step (ms, median of {repeats} interleaved rounds after warm-up, compile "
        "excluded), masked:"
    )
    print(
        f"{'V':>5s} {'L':>4s} {'B':>6s} {'sampler':15s} {'before':>9s} {'after':>9s} {'ratio':>6s}"
    )
    for row in rows:
        for name, cell in row["ms"].items():
            before = cell.get("before", float("nan"))
            print(
                f"{row['vocab']:5d} {row['length']:4d} {row['batch']:6d} {name:15s} "
                f"{before:9.2f} {cell['after']:9.2f} {cell['after'] / before:6.2f}"
            )
        ratio = row["ancestral_over_remdm"]
        print(
            "      ancestral / remdm per step (median of per-round ratios): before "
            f"{ratio['before']['median_round_ratio']:.2f}, after "
            f"{ratio['after']['median_round_ratio']:.2f}"
        )
        if "random_bit_share" in row:
            share = row["random_bit_share"]
            print(
                f"      random-bit share of the ancestral step: before {share['before']:.0%} "
                f"({row['random_bits_ms']['before']:.1f} ms), after {share['after']:.0%} "
                f"({row['random_bits_ms']['after']:.2f} ms)"
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
    parser.add_argument("--section", choices=("all", "step_speed"), default="all")
    parser.add_argument(
        "--repeats", type=int, default=15, help="interleaved timing rounds per step (median)"
    )
    args = parser.parse_args(argv)
    suffix = "_quick" if args.quick else ""
    json_path = RESULTS / f"discrete_samplers{suffix}.json"
    if args.section == "step_speed":
        rows = step_speed(args.repeats, args.quick, args.seed)
        payload = json.loads(json_path.read_text()) if json_path.exists() else {}
        payload["step_speed"] = rows
        RESULTS.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(payload, indent=1))
        print(f"\nwrote step_speed into {json_path}")
        return
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
        "step_speed": step_speed(args.repeats, args.quick, args.seed),
    }
    json_path.write_text(json.dumps(payload, indent=1))
    png_path = RESULTS / f"discrete_samplers{suffix}.png"
    plot(results, noise, steps, png_path)
    print(f"\nwrote {json_path} and {png_path}")


if __name__ == "__main__":
    main()
