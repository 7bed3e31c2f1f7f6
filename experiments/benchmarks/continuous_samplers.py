"""Benchmark of the continuous samplers against exact Gaussian-mixture samples, side by side with
diffusers and k-diffusion, plus compile-once figures, the PF-ODE likelihood and the adaptive
ODE backends.

Targets (`gmm_targets.py`): a 4-component 2-D mixture and an 8-component 64-D mixture, each
driven by its exact eps-model under VP(0.1, 20). Sections:

* `samplers`: for every registered sampler at 5, 10, 20 and 50 NFE (its default grid), the
  sliced W1 to 20,000 exact samples (256 projections; the floor of two exact sets is printed),
  the NFE actually spent and the wall time after compilation (median of 7 in 2-D, 3 in 64-D).
* `grids`: the grid sweep behind the per-sampler defaults: every deterministic to-zero sampler
  on each named grid and last nonzero time t_min, at 5/10/20/50 NFE; the grid is a traced input,
  so each (sampler, NFE) compiles once for all grids.
* `first_call`: the first call of a 20-NFE 2-D `dc.sample` in fresh processes: without the
  persistent compilation cache, with it cold, and with it warm (median of 3 processes each).
* `peers`: SW1 (same metric, same exact samples) of the samples that
  `experiments/benchmarks/peers/gmm_side_by_side.py` saved from diffusers and k-diffusion (run
  it first in the peers environment; skipped when its output directory is missing).
* `likelihood`, `adaptive`: PF-ODE likelihood error against the analytic log-density, and our
  embedded RK solver against diffrax.

    python -m experiments.benchmarks.continuous_samplers                 # everything
    python -m experiments.benchmarks.continuous_samplers --section samplers,peers
    python -m experiments.benchmarks.continuous_samplers --quick         # smoke run

Writes `experiments/benchmarks/results/continuous_samplers[_quick].{json,png}` (sections not
run keep their previous results in the JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

import diffax.continuous as dc
from diffax.core import enable_compilation_cache
from experiments.benchmarks.gmm_targets import TARGETS

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
NFES = (5, 10, 20, 50)
NUM_SAMPLES = 20_000
SECTIONS = ("samplers", "grids", "first_call", "peers", "likelihood", "adaptive")
# Tolerances swept by the adaptive samplers to cover the same NFE range.
ODE_TOLS = (0.3, 0.1, 3e-2, 1e-2)
SDE_TOLS = (1.0, 0.5, 0.2, 0.1)
GRID_NAMES = ("logsnr", "uniform", "karras", "quadratic")
GRID_T_MINS = (1e-3, 1e-2, 3e-2, 0.06, 0.1)
PROCESS = dc.VP()


def mixture(name: str) -> dc.GaussianMixture:
    w, m, s = TARGETS[name]()
    return dc.GaussianMixture(
        jnp.asarray(w, jnp.float32), jnp.asarray(m, jnp.float32), jnp.asarray(s, jnp.float32)
    )


def timed(fn, *args, repeats: int):
    """(result, median seconds) of a compiled function, compilation excluded."""
    out = jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return out, statistics.median(times)


def num_steps_for(step: dc.Step, nfe: int) -> int:
    """Grid intervals N giving `nfe` evaluations with the sampler's default final step."""
    per = step.evals_per_step
    if step.to_zero:  # the last interval costs one evaluation (x0_hat / Euler to 0)
        return max(1, round((nfe - 1) / per) + 1)
    return max(1, round((nfe - 1) / per))  # + the final denoising


def sampler_configs(name: str, step: dc.Step, nfes):
    """(requested NFE, sample() options) pairs for one sampler."""
    if name == "adaptive_ode":
        return [
            (n, {"num_steps": 1, "rtol": tol, "atol": tol})
            for n, tol in zip(nfes, ODE_TOLS, strict=False)
        ]
    if name == "adaptive_sde":
        return [
            (n, {"num_steps": 1, "rtol": tol, "atol": tol / 5})
            for n, tol in zip(nfes, SDE_TOLS, strict=False)
        ]
    return [(n, {"num_steps": num_steps_for(step, n)}) for n in nfes]


class Reference:
    """Exact samples of a target and the sliced W1 metric against them (fixed projections)."""

    def __init__(self, target: dc.GaussianMixture, key: jax.Array, num_samples: int):
        self.target = target
        self.exact = target.sample(jax.random.fold_in(key, 1), num_samples)
        projection_key = jax.random.fold_in(key, 2)
        self.sw1 = jax.jit(lambda x: dc.sliced_wasserstein(projection_key, x, self.exact, p=1))
        # The floor: mean SW1 of 5 further independent exact sets (one pair alone varies
        # +-30% at 20,000 samples).
        self.floor = float(
            np.mean(
                [
                    self.sw1(target.sample(jax.random.fold_in(key, 3 + i), num_samples))
                    for i in range(5)
                ]
            )
        )


def bench_samplers(name, target, ref, num_samples, repeats, nfes, key):
    model = target.model_fn(PROCESS, "eps")
    rows = []
    for sampler in dc.SAMPLERS.names():
        step = dc.SAMPLERS.get(sampler)()
        for requested, options in sampler_configs(sampler, step, nfes):
            fn = jax.jit(
                lambda k, sampler=sampler, options=options: dc.sample(
                    k, PROCESS, model, (num_samples, target.dim), sampler=sampler, **options
                )
            )
            # The adaptive SDE solver takes up to a minute a call at 64-D: timed once.
            reps = 1 if sampler.startswith("adaptive") else repeats
            (x, info), seconds = timed(fn, jax.random.fold_in(key, 5), repeats=reps)
            row = {
                "sampler": sampler,
                "nfe_requested": requested,
                "nfe": int(info["nfe"]),
                "options": dict(options),
                "grid": step.grid,
                "t_min": step.t_min,
                "sw1": float(ref.sw1(x)),
                "finite": bool(np.all(np.isfinite(np.asarray(x)))),
                "seconds": seconds,
            }
            rows.append(row)
            print(
                f"  {name:4s} {sampler:18s} nfe={row['nfe']:3d}  SW1={row['sw1']:.4f}"
                f"  {1e3 * seconds:8.1f} ms",
                flush=True,
            )
    return {"floor": ref.floor, "num_samples": num_samples, "rows": rows}


def bench_grids(name, target, ref, num_samples, nfes, key):
    """SW1 of each deterministic to-zero sampler on every named grid and t_min (the sweep behind
    the default grids); one compilation per (sampler, NFE): the grid is a traced argument."""
    model = target.model_fn(PROCESS, "eps")
    rows = []
    for sampler in dc.SAMPLERS.names():
        step = dc.SAMPLERS.get(sampler)()
        if not step.to_zero:
            continue
        t_max = PROCESS.sde_t_max if step.uses_sde_t_max else 1.0
        for nfe in nfes:
            n = num_steps_for(step, nfe)
            fn = jax.jit(
                lambda k, ts, sampler=sampler, n=n: dc.sample(
                    k,
                    PROCESS,
                    model,
                    (num_samples, target.dim),
                    sampler=sampler,
                    num_steps=n,
                    ts=ts,
                )
            )
            for grid in GRID_NAMES:
                for t_min in GRID_T_MINS:
                    ts = dc.time_grid(PROCESS, n, t_min=t_min, t_max=t_max, grid=grid, to_zero=True)
                    if not bool(jnp.all(ts[1:] < ts[:-1])):
                        continue
                    x, info = fn(jax.random.fold_in(key, 5), ts)
                    rows.append(
                        {
                            "sampler": sampler,
                            "nfe": int(info["nfe"]),
                            "grid": grid,
                            "t_min": t_min,
                            "sw1": float(ref.sw1(x)),
                        }
                    )
            best = min(
                (r for r in rows if r["sampler"] == sampler and r["nfe"] == int(info["nfe"])),
                key=lambda r: r["sw1"],
            )
            print(
                f"  {name:4s} grids {sampler:18s} nfe={best['nfe']:3d} best {best['grid']}"
                f" t_min={best['t_min']:g} SW1={best['sw1']:.4f}",
                flush=True,
            )
    return rows


FIRST_CALL_CHILD = """
import sys, time
start = time.perf_counter()
import jax
from experiments.benchmarks.continuous_samplers import mixture, PROCESS
import diffax.continuous as dc
from diffax.core import enable_compilation_cache
cache = sys.argv[1]
if cache != "off":
    enable_compilation_cache(cache)
imported = time.perf_counter()
target = mixture("2d")
model = target.model_fn(PROCESS, "eps")
key = jax.random.PRNGKey(0)
fn = jax.jit(lambda k: dc.sample(k, PROCESS, model, (20000, 2), sampler=sys.argv[2],
                                 num_steps=int(sys.argv[3])))
t0 = time.perf_counter()
jax.block_until_ready(fn(key))
t1 = time.perf_counter()
jax.block_until_ready(fn(key))
t2 = time.perf_counter()
print("RESULT", imported - start, t1 - t0, t2 - t1)
"""


def _child(cache: str, sampler: str, num_steps: int) -> tuple[float, float, float]:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    root = pathlib.Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", FIRST_CALL_CHILD, cache, sampler, str(num_steps)],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
        timeout=600,
        check=True,
    ).stdout
    line = next(v for v in out.splitlines() if v.startswith("RESULT"))
    return tuple(float(v) for v in line.split()[1:])


def bench_first_call(processes: int = 3):
    """First-call seconds of a 20-NFE 2-D sample in fresh processes (import time apart)."""
    sampler = "dpm_solver_pp_2m"
    n = num_steps_for(dc.SAMPLERS.get(sampler)(), 20)
    result = {"sampler": sampler, "num_steps": n, "num_samples": 20000}
    with tempfile.TemporaryDirectory() as cache:
        runs = {
            "no_cache": [_child("off", sampler, n) for _ in range(processes)],
            "cold_cache": [_child(cache, sampler, n)],
            "warm_cache": [_child(cache, sampler, n) for _ in range(processes)],
        }
    for label, values in runs.items():
        result[label] = {
            "import_s": statistics.median(v[0] for v in values),
            "first_call_s": statistics.median(v[1] for v in values),
            "second_call_s": statistics.median(v[2] for v in values),
            "processes": len(values),
        }
        print(
            f"  first call {label:10s} {result[label]['first_call_s']:.2f} s (second call "
            f"{result[label]['second_call_s']:.3f} s, import {result[label]['import_s']:.1f} s)",
            flush=True,
        )
    return result


def bench_peers(name, ref, directory: pathlib.Path):
    """SW1 with our metric of the peers' saved samples (same exact samples, same projections)."""
    index_path = directory / "index.json"
    if not index_path.exists():
        print(f"  peers: {index_path} not found (run experiments/benchmarks/peers first)")
        return None
    index = json.loads(index_path.read_text())
    entries = index["records"] if isinstance(index, dict) else index
    rows = []
    for e in entries:
        if e.get("target") != name:
            continue
        path = directory / e["file"] if "file" in e else None
        if path is None or not path.exists():
            continue
        x = jnp.asarray(np.load(path), jnp.float32)
        if x.shape != ref.exact.shape:
            continue
        rows.append(
            {
                "library": e.get("library"),
                "sampler": e.get("sampler"),
                "settings": e.get("settings"),
                "nfe": e.get("nfe_counted", e.get("nfe")),
                "sw1": float(ref.sw1(x)),
                "sw1_their_metric": e.get("sw1"),
                "seconds": e.get("wall_median_s"),
                "first_call_s": e.get("first_call_s"),
            }
        )
    return rows


def bench_likelihood(target, num_points, repeats, key):
    model = target.model_fn(PROCESS, "eps")
    x = target.sample(jax.random.fold_in(key, 6), num_points)
    exact = target.log_prob(x)
    rows = []
    for exact_div in (True, False):
        for backend in ("own", "diffrax"):
            for tol in (1e-3, 1e-5):
                fn = jax.jit(
                    lambda x, exact_div=exact_div, backend=backend, tol=tol: (
                        dc.log_likelihood_and_info(
                            jax.random.fold_in(key, 7),
                            PROCESS,
                            model,
                            x,
                            exact_divergence=exact_div,
                            backend=backend,
                            rtol=tol,
                            atol=tol,
                        )
                    )
                )
                (logp, info), seconds = timed(fn, x, repeats=repeats)
                err = np.abs(np.asarray(logp) - np.asarray(exact)) / target.dim
                rows.append(
                    {
                        "divergence": "exact" if exact_div else "hutchinson",
                        "backend": backend,
                        "tol": tol,
                        "nfe": int(info["nfe"]),
                        "mean_abs_err_nats_per_dim": float(err.mean()),
                        "ms_per_sample": 1e3 * seconds / num_points,
                    }
                )
                print(f"  likelihood {rows[-1]}", flush=True)
    return rows


def bench_adaptive_backends(target, num_samples, repeats, key):
    """Our while_loop RK against diffrax on the PF-ODE: accuracy, NFE and wall time."""
    model = target.model_fn(PROCESS, "eps")
    x1 = PROCESS.prior_sample(jax.random.fold_in(key, 8), (num_samples, target.dim))
    ts = jnp.asarray([1.0, 1e-3])

    def solver(backend, method, tol):
        step = dc.samplers.adaptive_ode(rtol=tol, atol=tol, backend=backend, method=method)
        return jax.jit(lambda x: dc.run_steps(None, step, PROCESS, model, x, ts, denoise=False))

    reference = solver("own", "dopri5", 1e-6)(x1)[0]
    rows = []
    for backend, method in [
        ("own", "bosh3"),
        ("own", "dopri5"),
        ("diffrax", "bosh3"),
        ("diffrax", "dopri5"),
        ("diffrax", "tsit5"),
    ]:
        for tol in (1e-2, 1e-3, 1e-4):
            (x, info), seconds = timed(solver(backend, method, tol), x1, repeats=repeats)
            rows.append(
                {
                    "backend": backend,
                    "method": method,
                    "tol": tol,
                    "nfe": int(info["nfe"]),
                    "rms_err_vs_reference": float(jnp.sqrt(jnp.mean((x - reference) ** 2))),
                    "us_per_sample": 1e6 * seconds / num_samples,
                }
            )
            print(f"  adaptive {rows[-1]}", flush=True)
    return {"rows": rows}


def best_by_nfe(rows, nfes, deterministic_only=False):
    """{nfe: (sw1, label)} of the best row at each requested NFE (nfe within +-1)."""
    out = {}
    for nfe in nfes:
        cands = [r for r in rows if r and abs(int(r["nfe"]) - nfe) <= 1]
        if cands:
            r = min(cands, key=lambda r: r["sw1"])
            label = r["sampler"] if "library" not in r else f"{r['library']} {r['sampler']}"
            out[nfe] = (r["sw1"], label)
    return out


def print_tables(results: dict, nfes) -> None:
    for name, block in results.get("samplers", {}).items():
        print(f"\n{name}: SW1 to {block['num_samples']} exact samples (floor {block['floor']:.4f})")
        print(f"{'sampler':18s} " + " ".join(f"{n:>14d}" for n in nfes) + "   (cells: SW1 @ NFE)")
        for sampler in sorted({r["sampler"] for r in block["rows"]}):
            cells = [r for r in block["rows"] if r["sampler"] == sampler]
            print(f"{sampler:18s} " + " ".join(f"{r['sw1']:8.4f} @{r['nfe']:>4d}" for r in cells))
        peers = results.get("peers", {}).get(name)
        ours = best_by_nfe(block["rows"], nfes)
        if peers:
            theirs = {
                lib: best_by_nfe([r for r in peers if r["library"] == lib], nfes)
                for lib in sorted({r["library"] for r in peers})
            }
            print(f"\n{name}: best at each NFE")
            for nfe in nfes:
                line = f"  NFE {nfe:3d}  diffax {ours.get(nfe, (float('nan'), '-'))[0]:.4f} "
                line += f"({ours.get(nfe, (0, '-'))[1]})"
                for lib, best in theirs.items():
                    sw, label = best.get(nfe, (float("nan"), "-"))
                    line += f" | {lib} {sw:.4f} ({label})"
                print(line)


def plot(results: dict, path: pathlib.Path) -> None:
    import matplotlib  # the only place matplotlib is imported

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results.get("samplers", {}))
    if not names:
        return
    fig, axes = plt.subplots(1, len(names), figsize=(7 * len(names), 5.5), squeeze=False)
    colors = plt.get_cmap("tab20").colors
    for j, name in enumerate(names):
        ax, block = axes[0, j], results["samplers"][name]
        for k, sampler in enumerate(sorted({r["sampler"] for r in block["rows"]})):
            rows = sorted(
                (r for r in block["rows"] if r["sampler"] == sampler), key=lambda r: r["nfe"]
            )
            ax.plot(
                [r["nfe"] for r in rows],
                [r["sw1"] for r in rows],
                marker="os^v<>"[k % 6],
                color=colors[k % len(colors)],
                label=sampler,
            )
        for lib, style in (("diffusers", "k--"), ("k-diffusion", "k:")):
            peers = [r for r in (results.get("peers", {}).get(name) or []) if r["library"] == lib]
            best = best_by_nfe(peers, NFES)
            if best:
                xs = sorted(best)
                ax.plot(xs, [best[n][0] for n in xs], style, lw=2, label=f"best {lib}")
        ax.axhline(block["floor"], color="grey", lw=0.8, ls=":", label="two-sample floor")
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="NFE",
            ylabel="sliced W1 to exact samples",
            title=f"{name} mixture",
        )
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument(
        "--section", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}"
    )
    parser.add_argument(
        "--peers_dir",
        default="/tmp/peers_gmm",
        help="output directory of peers/gmm_side_by_side.py",
    )
    parser.add_argument(
        "--compilation_cache_dir",
        default=None,
        help="persistent compilation cache (default ~/.cache/diffax/jax; '' off)",
    )
    args = parser.parse_args()
    enable_compilation_cache(args.compilation_cache_dir)
    sections = [s for s in args.section.split(",") if s]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown --section {unknown}; allowed: {', '.join(SECTIONS)}")
    quick = args.quick
    nfes = (5, 20) if quick else NFES
    num_samples = 2000 if quick else NUM_SAMPLES
    stem = "continuous_samplers_quick" if quick else "continuous_samplers"
    RESULTS.mkdir(parents=True, exist_ok=True)
    json_path = RESULTS / f"{stem}.json"
    results = json.loads(json_path.read_text()) if json_path.exists() else {}
    if "rows" in results.get("samplers", {}).get("2", {}):  # the previous format: start anew
        results = {}
    results.update(
        {
            "machine": f"{platform.machine()} {os.cpu_count()} cores, {jax.devices()[0]}",
            "jax": jax.__version__,
            "process": "VP(beta_min=0.1, beta_max=20)",
            "metric": "sliced W1, 256 projections, vs exact samples",
        }
    )
    key = jax.random.PRNGKey(0)
    start = time.perf_counter()
    refs = {}
    for name in TARGETS:
        target = mixture(name)
        refs[name] = Reference(target, jax.random.fold_in(key, 100 + target.dim), num_samples)
    for name, ref in refs.items():  # floors are recomputed on every run
        if name in results.get("samplers", {}):
            results["samplers"][name]["floor"] = ref.floor
    if "samplers" in sections:
        results["samplers"] = {}
        for name, ref in refs.items():
            print(f"== samplers, {name}", flush=True)
            repeats = (1 if quick else 7) if name == "2d" else (1 if quick else 3)
            results["samplers"][name] = bench_samplers(
                name, ref.target, ref, num_samples, repeats, nfes, jax.random.fold_in(key, 1)
            )
    if "grids" in sections:
        results["grids"] = {}
        for name, ref in refs.items():
            print(f"== grids, {name}", flush=True)
            results["grids"][name] = bench_grids(
                name, ref.target, ref, num_samples, nfes, jax.random.fold_in(key, 1)
            )
    if "first_call" in sections:
        print("== first call in fresh processes", flush=True)
        results["first_call"] = bench_first_call(1 if quick else 3)
    if "peers" in sections:
        results["peers"] = {}
        for name, ref in refs.items():
            rows = bench_peers(name, ref, pathlib.Path(args.peers_dir))
            if rows is not None:
                results["peers"][name] = rows
    if "likelihood" in sections:
        results["likelihood"] = {}
        for name, ref in refs.items():
            print(f"== PF-ODE likelihood, {name}", flush=True)
            results["likelihood"][name] = bench_likelihood(
                ref.target, 32 if quick else 256, 1 if quick else 3, jax.random.fold_in(key, 2)
            )
    if "adaptive" in sections:
        results["adaptive_backends"] = {}
        for name, ref in refs.items():
            print(f"== adaptive PF-ODE backends, {name}", flush=True)
            results["adaptive_backends"][name] = bench_adaptive_backends(
                ref.target, 512 if quick else 2048, 1 if quick else 3, jax.random.fold_in(key, 3)
            )
    results["seconds_last_run"] = time.perf_counter() - start
    print_tables(results, nfes)
    json_path.write_text(json.dumps(results, indent=1))
    plot(results, RESULTS / f"{stem}.png")
    print(f"wrote {json_path} and .png ({results['seconds_last_run']:.0f} s)")


if __name__ == "__main__":
    main()
