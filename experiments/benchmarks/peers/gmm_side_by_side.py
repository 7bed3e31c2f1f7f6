"""Side-by-side continuous samplers of diffusers and k-diffusion on the benchmark mixtures.

Runs the PyTorch peers of diffax's continuous samplers with the *exact* denoiser of the two
Gaussian-mixture targets of `experiments/benchmarks/gmm_targets.py` (the same NumPy arrays the
JAX benchmark uses), so that every difference in sample quality is solver and grid error.

Run it with the peers environment, never with the diffax venv (see README.md next to this file):

    /work/peers/bin/python experiments/benchmarks/peers/gmm_side_by_side.py [--quick] [--out DIR]

Process: VP with linear beta from 0.1 to 20. diffusers sees it as the DDPM discretization
(1000 training steps, linear betas 1e-4..0.02); k-diffusion sees it in the variance-exploding form
sigma = sigma_vp / alpha with Karras sigmas between the discrete schedule's sigma_min (0.01) and
sigma_max (157), as `CompVisDenoiser` would report them.

Exact model: for x_t = alpha x0 + sigma eps and the mixture sum_k w_k N(mu_k, diag(s_k^2)),
E[x0 | x_t] = sum_k r_k(x_t) (mu_k + alpha s_k^2 / v_k (x_t - alpha mu_k)), v_k = alpha^2 s_k^2 +
sigma^2, r_k the posterior component weights. Each diffusers scheduler is given the noise level it
itself assigns to the current step (its `sigmas[step_index]`, or `alphas_cumprod[t]` for DDIM),
and the prediction it consumes: `sample` (x0) for the data-prediction solvers (DPM-Solver++,
UniPC), `epsilon` for DEIS, Euler, Heun and DDIM. Model calls are counted: the recorded NFE is
the number of calls actually made.

Writes OUT/{target}_{library}_{sampler}_{nfe}.npy (float32 samples), OUT/index.json, and the
metrics-only summary experiments/benchmarks/results/peers_gmm.json. Quality is SW1, the sliced
Wasserstein-1 distance (mean over 256 random unit directions of the mean |sorted projections
difference|) to 20,000 exact mixture samples; the floor is SW1 between the exact set and
five further independent exact sets (mean).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import pathlib
import platform
import statistics
import sys
import time
import types

import numpy as np
import torch

HERE = pathlib.Path(__file__).resolve().parent
BENCHMARKS = HERE.parent
RESULTS = BENCHMARKS / "results" / "peers_gmm.json"

# The VP process as diffusers' DDPM discretization (linear beta 0.1..20 over t in [0, 1]).
TRAIN = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")


def load_targets():
    """Imports gmm_targets.py by path (the peers venv does not have diffax installed)."""
    spec = importlib.util.spec_from_file_location("gmm_targets", BENCHMARKS / "gmm_targets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.TARGETS


def load_k_sampling():
    """Returns `k_diffusion.sampling` without the package __init__ (it pulls skimage, torchvision).

    `sampling` needs only `utils.append_dims` from the package, so a stub `k_diffusion.utils`
    stands in for the real one when the full package does not import.
    """
    try:
        import k_diffusion.sampling as sampling

        return sampling
    except ImportError:
        pass
    for name in [m for m in sys.modules if m == "k_diffusion" or m.startswith("k_diffusion.")]:
        del sys.modules[name]
    found = importlib.util.find_spec("k_diffusion")
    if found is None:
        raise SystemExit("k-diffusion is not installed in this environment (see README.md)")
    package_dir = pathlib.Path(next(iter(found.submodule_search_locations)))
    package = types.ModuleType("k_diffusion")
    package.__path__ = [str(package_dir)]
    utils = types.ModuleType("k_diffusion.utils")

    def append_dims(x, target_dims):
        return x[(...,) + (None,) * (target_dims - x.ndim)]

    utils.append_dims = append_dims
    package.utils = utils
    sys.modules["k_diffusion"] = package
    sys.modules["k_diffusion.utils"] = utils
    spec = importlib.util.spec_from_file_location(
        "k_diffusion.sampling", package_dir / "sampling.py"
    )
    sampling = importlib.util.module_from_spec(spec)
    sys.modules["k_diffusion.sampling"] = sampling
    spec.loader.exec_module(sampling)
    package.sampling = sampling
    return sampling


# --------------------------------------------------------------------------------------------
# Exact model and metric
# --------------------------------------------------------------------------------------------


class MixturePosteriorMean:
    """E[x0 | alpha x0 + sigma eps = x] of a diagonal Gaussian mixture, counting its calls.

    The squared Mahalanobis distances are expanded into matrix products ([B, D] @ [D, K]),
    which is 5x faster than the [B, K, D] form at 64-D; the float32 logit error this adds is
    below 3e-4 on both targets at every noise level (checked against float64 by hand), far
    inside the gaps between components.
    """

    def __init__(self, weights, means, scales, dtype=torch.float32):
        self.dtype = dtype
        self.log_w = torch.log(torch.as_tensor(weights, dtype=dtype))
        self.mu = torch.as_tensor(means, dtype=dtype)
        self.s2 = torch.as_tensor(scales, dtype=dtype) ** 2
        self.calls = 0

    def __call__(self, x: torch.Tensor, alpha: float, sigma: float) -> torch.Tensor:
        self.calls += 1
        xd = x.to(self.dtype)
        var = alpha * alpha * self.s2 + sigma * sigma  # [K, D]
        inv = 1.0 / var
        quad = (
            (xd * xd) @ inv.T
            - (2.0 * alpha) * (xd @ (self.mu * inv).T)
            + (alpha * alpha) * (self.mu * self.mu * inv).sum(-1)
        )
        logits = self.log_w - 0.5 * torch.log(var).sum(-1) - 0.5 * quad
        resp = torch.softmax(logits, dim=-1)  # [B, K]
        gain = alpha * self.s2 * inv  # [K, D]
        mean = resp @ self.mu + xd * (resp @ gain) - alpha * (resp @ (gain * self.mu))
        return mean.to(x.dtype)


def exact_samples(target, n: int, seed: int) -> np.ndarray:
    """n float64 samples of the mixture."""
    weights, means, scales = target
    rng = np.random.default_rng(seed)
    comp = rng.choice(len(weights), size=n, p=weights)
    return means[comp] + scales[comp] * rng.standard_normal((n, means.shape[1]))


def unit_directions(dim: int, count: int, seed: int) -> np.ndarray:
    """[count, dim] random unit vectors."""
    theta = np.random.default_rng(seed).standard_normal((count, dim))
    return theta / np.linalg.norm(theta, axis=1, keepdims=True)


def sliced_w1(x: np.ndarray, y_sorted_proj: np.ndarray, theta: np.ndarray) -> float:
    """Mean over directions of mean |sorted(x . theta) - sorted(y . theta)| (equal sizes)."""
    px = np.sort(np.asarray(x, np.float64) @ theta.T, axis=0)
    if not np.all(np.isfinite(px)):
        return float("nan")
    return float(np.mean(np.abs(px - y_sorted_proj)))


# --------------------------------------------------------------------------------------------
# diffusers
# --------------------------------------------------------------------------------------------


def diffusers_configs():
    """(name, scheduler class name, kwargs, prediction_type, nfe_per_step) for every run."""
    pp = dict(algorithm_type="dpmsolver++")
    rows = []
    for order in (2, 3):
        tag = f"dpmpp_{order}m"
        base = dict(pp, solver_order=order)
        rows += [
            (tag, "DPMSolverMultistepScheduler", base, "sample"),
            (
                f"{tag}_karras",
                "DPMSolverMultistepScheduler",
                dict(base, use_karras_sigmas=True),
                "sample",
            ),
            (f"{tag}_lu", "DPMSolverMultistepScheduler", dict(base, use_lu_lambdas=True), "sample"),
        ]
    rows += [
        (
            "dpmpp_2m_sigmamin",
            "DPMSolverMultistepScheduler",
            dict(pp, solver_order=2, final_sigmas_type="sigma_min"),
            "sample",
        ),
        ("dpmpp_2s", "DPMSolverSinglestepScheduler", dict(pp, solver_order=2), "sample"),
    ]
    for variant in ("bh2", "bh1"):
        for order in (2, 3):
            unipc = dict(solver_type=variant, solver_order=order)
            rows.append((f"unipc_{variant}_{order}", "UniPCMultistepScheduler", unipc, "sample"))
    # bh1 with the default final sigma 0 returns NaN in diffusers 0.42 (B(h) = h is infinite
    # on the last step); stopping at sigma_min is the setting under which bh1 runs at all.
    for order in (2, 3):
        unipc = dict(solver_type="bh1", solver_order=order, final_sigmas_type="sigma_min")
        rows.append((f"unipc_bh1_{order}_sigmamin", "UniPCMultistepScheduler", unipc, "sample"))
    rows += [
        ("deis_2", "DEISMultistepScheduler", dict(solver_order=2), "epsilon"),
        ("deis_3", "DEISMultistepScheduler", dict(solver_order=3), "epsilon"),
        ("euler", "EulerDiscreteScheduler", {}, "epsilon"),
        ("euler_karras", "EulerDiscreteScheduler", dict(use_karras_sigmas=True), "epsilon"),
        ("euler_trailing", "EulerDiscreteScheduler", dict(timestep_spacing="trailing"), "epsilon"),
        ("heun", "HeunDiscreteScheduler", {}, "epsilon"),
        ("heun_karras", "HeunDiscreteScheduler", dict(use_karras_sigmas=True), "epsilon"),
        # clip_sample defaults to True (images in [-1, 1]); it would clip the mixture's means.
        ("ddim", "DDIMScheduler", dict(clip_sample=False), "epsilon"),
        (
            "ddim_trailing",
            "DDIMScheduler",
            dict(clip_sample=False, timestep_spacing="trailing"),
            "epsilon",
        ),
    ]
    return rows


def steps_for_nfe(scheduler_name: str, nfe: int) -> int:
    """Inference steps whose NFE is the largest not above `nfe` (Heun: 2N - 1 calls)."""
    if "Heun" in scheduler_name:
        return max(1, (nfe + 1) // 2)
    return nfe


def noise_level(scheduler, t) -> tuple[float, float]:
    """(alpha, sigma) of the VP sample the scheduler feeds the model at timestep t."""
    if hasattr(scheduler, "sigmas") and hasattr(scheduler, "step_index"):
        if scheduler.step_index is None:
            scheduler._init_step_index(t)
        s = float(scheduler.sigmas[scheduler.step_index])
        alpha = 1.0 / math.sqrt(1.0 + s * s)
        return alpha, s * alpha
    abar = float(scheduler.alphas_cumprod[int(t)])
    return math.sqrt(abar), math.sqrt(1.0 - abar)


def run_diffusers(cls, kwargs, prediction, steps, noise, model):
    """One full sampling run with a fresh scheduler, like a pipeline's denoising loop."""
    scheduler = cls(**TRAIN, **kwargs, prediction_type=prediction)
    scheduler.set_timesteps(steps)
    x = noise * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        x_in = scheduler.scale_model_input(x, t)
        alpha, sigma = noise_level(scheduler, t)
        x0 = model(x_in, alpha, sigma)
        out = x0 if prediction == "sample" else (x_in - alpha * x0) / sigma
        x = scheduler.step(out, t, x).prev_sample
    return x


# --------------------------------------------------------------------------------------------
# k-diffusion
# --------------------------------------------------------------------------------------------


def k_configs(k):
    """(name, sampler function, nfe -> number of sigmas, kwargs)."""
    return [
        ("euler", k.sample_euler, lambda n: n, {}),
        ("heun", k.sample_heun, lambda n: max(1, (n + 1) // 2), {}),
        ("dpmpp_2m", k.sample_dpmpp_2m, lambda n: n, {}),
        ("lms", k.sample_lms, lambda n: n, {}),
        # i.i.d. Gaussian increments: the default Brownian tree (torchsde) gives the same law
        # but costs ~15 s per run at 20,000 x 64, which would dominate the benchmark.
        ("dpmpp_3m_sde", k.sample_dpmpp_3m_sde, lambda n: n, {"noise": "iid"}),
    ]


def run_k(k, fn, kwargs, steps, noise, model, sigma_min, sigma_max):
    """k-diffusion's usual call: Karras sigmas (rho 7, final 0), x = noise * sigma_max."""
    sigmas = k.get_sigmas_karras(steps, sigma_min, sigma_max)

    def denoiser(x, sigma):
        return model(x, 1.0, float(sigma.reshape(-1)[0]))

    x = noise * sigmas[0]
    extra = {}
    if kwargs.get("noise") == "iid":
        extra["noise_sampler"] = k.default_noise_sampler(x)
    return fn(denoiser, x, sigmas, disable=True, **extra)


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


def timed(run, reps: int, seed: int):
    """(last output, first-call seconds, median seconds of `reps` later calls, all times)."""
    torch.manual_seed(seed)
    start = time.perf_counter()
    out = run()
    first = time.perf_counter() - start
    times = []
    if not torch.isfinite(out).all():
        return out, first, float("nan"), times  # a failed run is not worth timing
    for _ in range(reps):
        torch.manual_seed(seed)
        start = time.perf_counter()
        out = run()
        times.append(time.perf_counter() - start)
    return out, first, statistics.median(times) if times else float("nan"), times


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2,000 samples, NFE 10/20, 2 reps")
    parser.add_argument("--out", default="/tmp/peers_gmm", help="samples and index.json")
    parser.add_argument("--targets", default="2d,64d")
    parser.add_argument("--nfe", default="5,10,20,50")
    parser.add_argument("--num-samples", type=int, default=20_000)
    parser.add_argument("--reps", type=int, default=7, help="timed runs after the warm-up")
    parser.add_argument(
        "--time-nfe",
        default="20",
        help="NFEs whose runs are timed `reps` times ('all' = every NFE); the others run once",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--only", default="", help="comma list of sampler names to run")
    parser.add_argument("--results", default=str(RESULTS), help="metrics-only JSON ('' = none)")
    args = parser.parse_args()
    if args.quick:
        args.num_samples, args.nfe, args.reps = 2_000, "10,20", 2
    return args


def main() -> None:
    args = parse_args()
    threads_before = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    import diffusers

    diffusers.utils.logging.set_verbosity_error()
    k = load_k_sampling()
    targets = load_targets()
    out_dir = pathlib.Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    nfes = [int(v) for v in args.nfe.split(",")]
    time_all = args.time_nfe == "all"
    time_nfes = set() if time_all else {int(v) for v in args.time_nfe.split(",") if v}
    only = set(filter(None, args.only.split(",")))

    train = diffusers.DDPMScheduler(**TRAIN)
    train_sigmas = ((1 - train.alphas_cumprod) / train.alphas_cumprod) ** 0.5
    sigma_min, sigma_max = float(train_sigmas[0]), float(train_sigmas[-1])

    meta = {
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "k_diffusion": _version("k-diffusion"),
        "python": platform.python_version(),
        "threads_default": threads_before,
        "threads": torch.get_num_threads(),
        "dtype": args.dtype,
        "num_samples": args.num_samples,
        "reps": args.reps,
        "timed_nfe": args.time_nfe,
        "sw1_directions": 256,
        "process": "VP linear beta 0.1..20; diffusers DDPM 1000 steps, betas 1e-4..0.02",
        "k_sigmas": {"kind": "karras rho=7", "sigma_min": sigma_min, "sigma_max": sigma_max},
        "seeds": "exact 1000+i, floor 2000+10i+j, directions 3000+i, prior 10000+100i+nfe",
        "wall": (
            "median (and min) of `reps` runs after one warm-up run, at the NFEs in timed_nfe "
            "(null elsewhere); first_call_s is the warm-up (first run of that config in the "
            "process); the 2-core host was shared with other jobs (see loadavg)"
        ),
        "quick": args.quick,
        "loadavg_start": os.getloadavg(),
    }
    records, floors = [], {}
    for ti, name in enumerate(args.targets.split(",")):
        target = targets[name]()
        dim = target[1].shape[1]
        ref = exact_samples(target, args.num_samples, 1000 + ti)
        theta = unit_directions(dim, 256, 3000 + ti)
        ref_proj = np.sort(ref @ theta.T, axis=0)
        # One pair of exact sets is a noisy floor (the component counts alone move it by ~30%),
        # so it is averaged over five independent second sets.
        pairs = [
            sliced_w1(exact_samples(target, args.num_samples, 2000 + 10 * ti + j), ref_proj, theta)
            for j in range(5)
        ]
        floors[name] = {"mean": float(np.mean(pairs)), "pairs": pairs}
        print(
            f"[{name}] dim={dim} SW1 floor (exact vs exact, 5 pairs) = "
            f"{np.mean(pairs):.4f} (min {min(pairs):.4f}, max {max(pairs):.4f})",
            flush=True,
        )
        model = MixturePosteriorMean(*target, dtype=dtype)

        jobs = []
        for sampler, cls_name, kwargs, pred in diffusers_configs():
            cls = getattr(diffusers, cls_name)
            for nfe in nfes:
                steps = steps_for_nfe(cls_name, nfe)
                settings = dict(
                    kwargs, scheduler=cls_name, prediction_type=pred, num_inference_steps=steps
                )
                jobs.append(
                    (
                        "diffusers",
                        sampler,
                        nfe,
                        settings,
                        lambda noise, cls=cls, kw=kwargs, p=pred, n=steps: run_diffusers(
                            cls, kw, p, n, noise, model
                        ),
                    )
                )
        for sampler, fn, to_steps, kwargs in k_configs(k):
            for nfe in nfes:
                steps = to_steps(nfe)
                settings = dict(
                    kwargs,
                    function=fn.__name__,
                    sigmas="get_sigmas_karras(n, sigma_min, sigma_max, rho=7) + [0]",
                    n=steps,
                )
                jobs.append(
                    (
                        "k-diffusion",
                        sampler,
                        nfe,
                        settings,
                        lambda noise, fn=fn, kw=kwargs, n=steps: run_k(
                            k, fn, kw, n, noise, model, sigma_min, sigma_max
                        ),
                    )
                )

        for library, sampler, nfe, settings, run in jobs:
            if only and sampler not in only:
                continue
            seed = 10_000 + 100 * ti + nfe
            noise_np = np.random.default_rng(seed).standard_normal((args.num_samples, dim))
            noise = torch.from_numpy(noise_np.astype(np.float32)).to(dtype)
            model.calls = 0
            reps = args.reps if (time_all or nfe in time_nfes) else 0
            x, first, wall, times = timed(lambda: run(noise), reps, seed)
            counted = model.calls // (len(times) + 1)
            samples = x.detach().to(torch.float32).numpy()
            fname = f"{name}_{library}_{sampler}_{nfe}.npy"
            np.save(out_dir / fname, samples)
            sw1 = sliced_w1(samples, ref_proj, theta)
            rec = {
                "target": name,
                "library": library,
                "sampler": sampler,
                "settings": settings,
                "nfe_requested": nfe,
                "nfe_counted": counted,
                "sw1": sw1,
                "wall_median_s": wall,
                "wall_min_s": min(times) if times else float("nan"),
                "wall_runs_s": times,
                "first_call_s": first,
                "file": fname,
            }
            records.append(rec)
            print(
                f"  {name:4s} {library:11s} {sampler:18s} nfe={nfe:3d}/{counted:3d}  "
                f"SW1={sw1:.4f}  wall={wall * 1e3:8.1f} ms  first={first * 1e3:8.1f} ms",
                flush=True,
            )

    meta["loadavg_end"] = os.getloadavg()
    best = best_per_nfe(records)
    index = {"meta": meta, "floors": floors, "records": records, "best": best}
    (out_dir / "index.json").write_text(json.dumps(_finite_or_none(index), indent=1))
    print_tables(records, floors, best)
    if args.results:
        summary = {
            "meta": dict(meta, samples_dir=str(out_dir)),
            "floors": floors,
            "best": best,
            "records": [
                {key: r[key] for key in r if key not in ("wall_runs_s", "file")} for r in records
            ],
        }
        path = pathlib.Path(args.results)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(_finite_or_none(summary), indent=1) + "\n")
        print(f"wrote {path}")
    print(f"wrote {out_dir / 'index.json'} and {len(records)} sample files")


def _finite_or_none(value):
    """NaN/inf -> None, recursively, so the JSON files are strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    return value


def _version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


def best_per_nfe(records):
    """{target: {nfe: {library: {sampler, sw1, nfe_counted}}}} (lowest SW1 with NFE <= target)."""
    best = {}
    for r in records:
        if not np.isfinite(r["sw1"]) or r["nfe_counted"] > r["nfe_requested"]:
            continue
        slot = best.setdefault(r["target"], {}).setdefault(str(r["nfe_requested"]), {})
        cur = slot.get(r["library"])
        if cur is None or r["sw1"] < cur["sw1"]:
            slot[r["library"]] = {
                k: r[k] for k in ("sampler", "sw1", "nfe_counted", "wall_median_s")
            }
    return best


def print_tables(records, floors, best):
    for target in dict.fromkeys(r["target"] for r in records):
        rows = [r for r in records if r["target"] == target]
        nfes = sorted({r["nfe_requested"] for r in rows})
        print(
            f"\n### {target}: SW1 to exact samples (floor {floors[target]['mean']:.4f}); "
            "NFE counted in ()"
        )
        print(
            "| library | sampler | "
            + " | ".join(str(n) for n in nfes)
            + " | wall@20 ms | first@20 ms |"
        )
        print("|---|---|" + "---|" * (len(nfes) + 2))
        for key in dict.fromkeys((r["library"], r["sampler"]) for r in rows):
            cells, wall, first = [], "", ""
            for n in nfes:
                hit = [
                    r
                    for r in rows
                    if (r["library"], r["sampler"]) == key and r["nfe_requested"] == n
                ]
                if not hit:
                    cells.append("")
                    continue
                r = hit[0]
                cell = f"{r['sw1']:.3f}"
                if r["nfe_counted"] != n:
                    cell += f" ({r['nfe_counted']})"
                cells.append(cell)
                if n == 20:
                    wall, first = (
                        f"{r['wall_median_s'] * 1e3:.0f}",
                        f"{r['first_call_s'] * 1e3:.0f}",
                    )
            print(f"| {key[0]} | {key[1]} | " + " | ".join(cells) + f" | {wall} | {first} |")
        print(f"\nbest per NFE ({target}):")
        for n, libs in best.get(target, {}).items():
            parts = [f"{lib}: {b['sampler']} {b['sw1']:.3f}" for lib, b in sorted(libs.items())]
            print(f"  NFE {n:>3s}: " + "; ".join(parts))


if __name__ == "__main__":
    main()
