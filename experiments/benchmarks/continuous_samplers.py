"""Benchmark of the continuous samplers, PF-ODE likelihood and adaptive ODE backends.

Targets: Gaussian mixtures in d = 2 (8 components on a ring) and d = 64 (8 random components),
driven by their exact eps-model under the VP process. For every registered sampler and NFE budget
in {5, 10, 20, 50, 100, 200} it reports the sliced 2-Wasserstein distance to exact samples, the
mean exact negative log-density of the samples, and the wall time per sample (median of repeats,
after compilation). It then measures the PF-ODE likelihood error against the analytic
log-density, and our own embedded RK solver against diffrax for the adaptive PF-ODE.

    python -m experiments.benchmarks.continuous_samplers           # full run
    python -m experiments.benchmarks.continuous_samplers --quick   # small smoke run

Writes `experiments/benchmarks/results/continuous_samplers[_quick].{json,png}`.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import diffax.continuous as dc

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
NFES = (5, 10, 20, 50, 100, 200)
# Tolerances swept by the adaptive samplers to cover the same NFE range.
ODE_TOLS = (0.3, 0.1, 3e-2, 1e-2, 3e-3, 1e-3)
SDE_TOLS = (1.0, 0.5, 0.2, 0.1, 0.05, 0.02)


def ring_mixture() -> dc.GaussianMixture:
    angles = jnp.linspace(0.0, 2.0 * jnp.pi, 9)[:-1]
    means = 2.0 * jnp.stack([jnp.cos(angles), jnp.sin(angles)], axis=1)
    return dc.GaussianMixture(jnp.full((8,), 1 / 8), means, jnp.full((8, 2), 0.3))


def random_mixture(dim: int, key: jax.Array) -> dc.GaussianMixture:
    k_w, k_m, k_s = jax.random.split(key, 3)
    weights = jax.nn.softmax(0.5 * jax.random.normal(k_w, (8,)))
    means = jax.random.normal(k_m, (8, dim))
    scales = jax.random.uniform(k_s, (8, dim), minval=0.2, maxval=0.6)
    return dc.GaussianMixture(weights, means, scales)


def timed(fn, *args, repeats: int):
    """(result, median seconds) of a compiled function, compilation excluded."""
    out = jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return out, statistics.median(times)


def sampler_configs(name: str, step: dc.Step, quick: bool):
    """(requested NFE, sample() options) pairs for one sampler."""
    nfes = (5, 20) if quick else NFES
    if name == "adaptive_ode":
        tols = (ODE_TOLS[0], ODE_TOLS[3]) if quick else ODE_TOLS
        return [
            (n, {"num_steps": 1, "rtol": tol, "atol": tol})
            for n, tol in zip(nfes, tols, strict=True)
        ]
    if name == "adaptive_sde":
        tols = (SDE_TOLS[0], SDE_TOLS[3]) if quick else SDE_TOLS
        return [
            (n, {"num_steps": 1, "rtol": tol, "atol": tol / 5})
            for n, tol in zip(nfes, tols, strict=True)
        ]
    # All fixed-step samplers end with one denoising evaluation (their default).
    return [(n, {"num_steps": max(1, round((n - 1) / step.evals_per_step))}) for n in nfes]


def bench_samplers(target, process, num_samples, repeats, quick, key):
    model = target.model_fn(process, "eps")
    exact = target.sample(jax.random.fold_in(key, 1), num_samples)
    sw_key = jax.random.fold_in(key, 2)
    sw = jax.jit(dc.sliced_wasserstein)
    nll = jax.jit(lambda x: -target.log_prob(x).mean())
    ref = {
        "sw_exact_vs_exact": float(
            sw(sw_key, target.sample(jax.random.fold_in(key, 3), num_samples), exact)
        ),
        "nll_exact": float(nll(target.sample(jax.random.fold_in(key, 4), 50_000))),
    }
    rows = []
    for name in dc.SAMPLERS.names():
        step = dc.SAMPLERS.get(name)()
        for requested, options in sampler_configs(name, step, quick):
            fn = jax.jit(
                lambda k, name=name, options=options: dc.sample(
                    k, process, model, (num_samples, target.dim), sampler=name, **options
                )
            )
            (x, info), seconds = timed(fn, jax.random.fold_in(key, 5), repeats=repeats)
            row = {
                "sampler": name,
                "nfe_requested": requested,
                "nfe": int(info["nfe"]),
                "options": {k: v for k, v in options.items()},
                "sliced_w2": float(sw(sw_key, x, exact)),
                "nll": float(nll(x)),
                "finite": bool(np.all(np.isfinite(np.asarray(x)))),
                "us_per_sample": 1e6 * seconds / num_samples,
            }
            rows.append(row)
            print(
                f"  d={target.dim:<3d} {name:18s} nfe={row['nfe']:4d}  SW2={row['sliced_w2']:.4f}"
                f"  NLL={row['nll']:.4f} (exact {ref['nll_exact']:.4f})"
                f"  {row['us_per_sample']:.2f} us/sample",
                flush=True,
            )
    return {"reference": ref, "rows": rows}


def bench_likelihood(target, process, num_points, repeats, key):
    model = target.model_fn(process, "eps")
    x = target.sample(jax.random.fold_in(key, 6), num_points)
    exact = target.log_prob(x)
    rows = []
    settings = [
        (exact_div, backend, tol)
        for exact_div in (True, False)
        for backend in ("own", "diffrax")
        for tol in (1e-3, 1e-5)
    ]
    for exact_div, backend, tol in settings:
        fn = jax.jit(
            lambda x, exact_div=exact_div, backend=backend, tol=tol: dc.log_likelihood_and_info(
                jax.random.fold_in(key, 7),
                process,
                model,
                x,
                exact_divergence=exact_div,
                backend=backend,
                rtol=tol,
                atol=tol,
            )
        )
        (logp, info), seconds = timed(fn, x, repeats=repeats)
        err = np.abs(np.asarray(logp) - np.asarray(exact)) / target.dim
        row = {
            "divergence": "exact" if exact_div else "hutchinson",
            "backend": backend,
            "tol": tol,
            "nfe": int(info["nfe"]),
            "mean_abs_err_nats_per_dim": float(err.mean()),
            "max_abs_err_nats_per_dim": float(err.max()),
            "bias_nats_per_dim": float((np.asarray(logp) - np.asarray(exact)).mean() / target.dim),
            "ms_per_sample": 1e3 * seconds / num_points,
        }
        rows.append(row)
        print(
            f"  d={target.dim:<3d} likelihood {row['divergence']:10s} {backend:7s} tol={tol:g}"
            f"  nfe={row['nfe']:4d}  |err|={row['mean_abs_err_nats_per_dim']:.2e} nats/dim"
            f"  {row['ms_per_sample']:.3f} ms/sample",
            flush=True,
        )
    return rows


def bench_adaptive_backends(target, process, num_samples, repeats, key):
    """Our while_loop RK against diffrax on the PF-ODE: accuracy, NFE and wall time."""
    model = target.model_fn(process, "eps")
    x1 = process.prior_sample(jax.random.fold_in(key, 8), (num_samples, target.dim))
    ts = jnp.asarray([1.0, 1e-3])

    def solver(backend, method, tol):
        return jax.jit(
            lambda x: dc.run_steps(
                None,
                dc.samplers.adaptive_ode(rtol=tol, atol=tol, backend=backend, method=method),
                process,
                model,
                x,
                ts,
                denoise=False,
            )
        )

    reference = solver("own", "dopri5", 1e-6)(x1)[0]
    rows = []
    combos = [("own", "bosh3"), ("own", "dopri5"), ("diffrax", "bosh3"), ("diffrax", "dopri5")]
    combos.append(("diffrax", "tsit5"))
    for backend, method in combos:
        for tol in (1e-2, 1e-3, 1e-4):
            (x, info), seconds = timed(solver(backend, method, tol), x1, repeats=repeats)
            row = {
                "backend": backend,
                "method": method,
                "tol": tol,
                "nfe": int(info["nfe"]),
                "rms_err_vs_reference": float(jnp.sqrt(jnp.mean((x - reference) ** 2))),
                "us_per_sample": 1e6 * seconds / num_samples,
            }
            rows.append(row)
            print(
                f"  d={target.dim:<3d} adaptive {backend:7s} {method:6s} tol={tol:g}"
                f"  nfe={row['nfe']:4d}  rms={row['rms_err_vs_reference']:.2e}"
                f"  {row['us_per_sample']:.2f} us/sample",
                flush=True,
            )
    check = solver("diffrax", "dopri5", 1e-6)(x1)[0]
    agreement = float(jnp.sqrt(jnp.mean((check - reference) ** 2)))
    return {"rows": rows, "reference_agreement_rms": agreement}


def plot(results: dict, path: pathlib.Path) -> None:
    import matplotlib  # the only place matplotlib is imported

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dims = list(results["samplers"])
    fig, axes = plt.subplots(2, len(dims), figsize=(6 * len(dims), 9), squeeze=False)
    colors = plt.get_cmap("tab20").colors
    for j, dim in enumerate(dims):
        block = results["samplers"][dim]
        names = sorted({r["sampler"] for r in block["rows"]})
        for k, name in enumerate(names):
            rows = sorted(
                (r for r in block["rows"] if r["sampler"] == name), key=lambda r: r["nfe"]
            )
            nfe = [r["nfe"] for r in rows]
            style = dict(
                ls="--" if name.startswith("adaptive") else "-",
                marker="os^v<>"[k % 6],
                color=colors[k % len(colors)],
                label=name,
            )
            axes[0, j].plot(nfe, [r["sliced_w2"] for r in rows], **style)
            gap = [abs(r["nll"] - block["reference"]["nll_exact"]) for r in rows]
            axes[1, j].plot(nfe, gap, **style)
        axes[0, j].axhline(block["reference"]["sw_exact_vs_exact"], color="k", lw=0.8, ls=":")
        labels = ("sliced W2 to exact samples", "|mean NLL - exact mean NLL| (nats)")
        for i, label in enumerate(labels):
            axes[i, j].set(
                xscale="log", yscale="log", xlabel="NFE", ylabel=label, title=f"d = {dim}"
            )
        axes[0, j].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    args = parser.parse_args()
    quick = args.quick
    key = jax.random.PRNGKey(0)
    process = dc.VP()
    targets = {2: ring_mixture(), 64: random_mixture(64, jax.random.PRNGKey(64))}
    num_samples = {2: 512, 64: 256} if quick else {2: 4096, 64: 2048}
    repeats = 1 if quick else 3
    results = {
        "device": str(jax.devices()[0]),
        "process": "VP(beta_min=0.1, beta_max=20)",
        "num_samples": num_samples,
        "samplers": {},
        "likelihood": {},
        "adaptive_backends": {},
    }
    start = time.perf_counter()
    for dim, target in targets.items():
        print(f"== samplers, d = {dim}", flush=True)
        results["samplers"][dim] = bench_samplers(
            target, process, num_samples[dim], repeats, quick, jax.random.fold_in(key, dim)
        )
    for dim, target in targets.items():
        print(f"== PF-ODE likelihood, d = {dim}", flush=True)
        results["likelihood"][dim] = bench_likelihood(
            target, process, 32 if quick else 256, repeats, jax.random.fold_in(key, dim)
        )
        print(f"== adaptive PF-ODE backends, d = {dim}", flush=True)
        results["adaptive_backends"][dim] = bench_adaptive_backends(
            target, process, num_samples[dim], repeats, jax.random.fold_in(key, dim)
        )
    results["total_seconds"] = time.perf_counter() - start
    print_tables(results)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = "continuous_samplers_quick" if quick else "continuous_samplers"
    (RESULTS / f"{stem}.json").write_text(json.dumps(results, indent=1))
    plot(results, RESULTS / f"{stem}.png")
    print(f"wrote {RESULTS / stem}.json and .png ({results['total_seconds']:.0f} s)")


def print_tables(results: dict) -> None:
    for dim, block in results["samplers"].items():
        ref = block["reference"]
        print(
            f"\nd = {dim}: cells are NFE:SW2/NLL (exact samples: SW2 "
            f"{ref['sw_exact_vs_exact']:.3f}, NLL {ref['nll_exact']:.3f})"
        )
        for name in sorted({r["sampler"] for r in block["rows"]}):
            cells = [
                f"{r['nfe']:>4d}:{r['sliced_w2']:.3f}/{r['nll']:.3f}"
                for r in block["rows"]
                if r["sampler"] == name
            ]
            print(f"{name:18s} " + "  ".join(cells))
    for dim, rows in results["likelihood"].items():
        print(f"\nd = {dim}: PF-ODE likelihood |error| (nats/dim), NFE, ms/sample")
        for r in rows:
            print(
                f"  {r['divergence']:10s} {r['backend']:7s} tol={r['tol']:<6g} nfe={r['nfe']:4d}"
                f" err={r['mean_abs_err_nats_per_dim']:.2e}"
                f" (max {r['max_abs_err_nats_per_dim']:.2e})"
                f" {r['ms_per_sample']:.3f} ms"
            )
    for dim, block in results["adaptive_backends"].items():
        print(
            f"\nd = {dim}: adaptive PF-ODE, own vs diffrax (reference agreement "
            f"{block['reference_agreement_rms']:.1e})"
        )
        for r in block["rows"]:
            print(
                f"  {r['backend']:7s} {r['method']:6s} tol={r['tol']:<6g} nfe={r['nfe']:4d}"
                f" rms={r['rms_err_vs_reference']:.2e} {r['us_per_sample']:.2f} us/sample"
            )


if __name__ == "__main__":
    main()
