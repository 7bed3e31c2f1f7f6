"""Reference outputs of diffusers' UniPC and DEIS schedulers for diffax's equality test.

Writes tests/continuous/data/diffusers_unipc_deis_reference.npz, read by
tests/continuous/test_unipc_deis.py. Run it with the peers environment (torch + diffusers; see
README.md next to this file), never with the diffax venv:

    /work/peers/bin/python experiments/benchmarks/peers/make_unipc_reference.py

Everything is float64 (torch default dtype set to float64). The process is VP in diffusers' form:
for a noise level rho = sigma/alpha, alpha = 1/sqrt(1 + rho^2) and sigma = rho alpha, which any
diffax VP process reproduces at the time t with logSNR(t) = -2 log rho. The grids are given as
half-logSNR values lam = -log rho (the test maps them to diffax times with `t_from_log_snr`);
"zero" grids end at rho = 0 (lam = +inf, t = 0). Each scheduler's `sigmas` and `timesteps` are
replaced after `set_timesteps(N)`: sigmas by exp(-lam), timesteps by N distinct labels, and the
model is evaluated at the scheduler's own current sigma. The model is the exact eps prediction
E[eps | x_t] of a 3-component 2-D Gaussian mixture (closed form, written here in NumPy).

Configurations (all with `prediction_type="epsilon"`): UniPC variants bh1/bh2, orders 1-3, with
`lower_order_final` True on a grid ending at rho_min ("tmin") and at 0 ("zero"), and False on
"tmin"; DEIS orders 1-3 on "tmin" with 10 steps (`lower_order_final` acts below 15) and 16.
Left out, because diffusers returns NaN there: UniPC bh1 on "zero" grids (B(h) = h is infinite
on the last step and multiplies a zero), DEIS on "zero" grids (sigma_t * (e^h - 1) = 0 * inf).
"""

from __future__ import annotations

import argparse
import pathlib

import diffusers
import numpy as np
import torch

OUT = pathlib.Path(__file__).resolve().parents[3] / "tests/continuous/data"

WEIGHTS = np.array([0.5, 0.3, 0.2])
MEANS = np.array([[1.5, -0.5], [-1.0, 1.0], [0.0, -2.0]])
SCALES = np.array([[0.3, 0.5], [0.6, 0.2], [0.4, 0.4]])


def mixture_eps(x: np.ndarray, rho: float) -> np.ndarray:
    """E[eps | x_t] for x_t = alpha x0 + sigma eps, x0 ~ the mixture, alpha = 1/sqrt(1 + rho^2)."""
    alpha = 1.0 / np.sqrt(1.0 + rho**2)
    sigma = rho * alpha
    var = alpha**2 * SCALES**2 + sigma**2  # [K, D]
    resid = x[:, None, :] - alpha * MEANS  # [B, K, D]
    log_n = -0.5 * np.sum(resid**2 / var + np.log(2.0 * np.pi * var), axis=-1)
    logits = np.log(WEIGHTS) + log_n
    logits -= logits.max(axis=1, keepdims=True)
    resp = np.exp(logits)
    resp /= resp.sum(axis=1, keepdims=True)
    # E[eps | x, k] = sigma / var_k * (x - alpha mu_k)
    return np.einsum("bk,bkd->bd", resp, sigma / var * resid)


def run(scheduler, lam: np.ndarray, x: np.ndarray) -> np.ndarray:
    n = len(lam) - 1
    scheduler.set_timesteps(n)
    rho = np.exp(-lam)  # exp(-inf) = 0 on "zero" grids
    scheduler.sigmas = torch.tensor(rho, dtype=torch.float64)
    scheduler.timesteps = torch.arange(n, 0, -1, dtype=torch.int64)
    sample = torch.tensor(x, dtype=torch.float64)
    for k, label in enumerate(scheduler.timesteps):
        eps = torch.tensor(mixture_eps(sample.numpy(), rho[k]), dtype=torch.float64)
        sample = scheduler.step(eps, label, sample).prev_sample
    return sample.numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(OUT / "diffusers_unipc_deis_reference.npz"))
    args = parser.parse_args()
    torch.set_default_dtype(torch.float64)
    rng = np.random.default_rng(0)
    lam_start, lam_end = -2.5, 3.5
    grids = {
        "tmin10": np.linspace(lam_start, lam_end, 11),
        "zero10": np.append(np.linspace(lam_start, lam_end, 10), np.inf),
        "tmin16": np.linspace(lam_start, lam_end, 17),
    }
    # A VP sample at lam_start: alpha x0 + sigma eps from the standard normal prior's scale.
    x_start = rng.standard_normal((16, 2))
    common = dict(num_train_timesteps=1000, prediction_type="epsilon")
    out = {"x_start": x_start, "diffusers_version": np.array(diffusers.__version__)}
    for name, lam in grids.items():
        out[f"lam_{name}"] = lam
    configs = []
    for variant in ("bh1", "bh2"):
        for order in (1, 2, 3):
            for grid, lower in (("tmin10", True), ("zero10", True), ("tmin10", False)):
                if variant == "bh1" and grid.startswith("zero"):
                    continue
                key = f"unipc_{variant}_{order}_{grid}_{'lof' if lower else 'full'}"
                sched = diffusers.UniPCMultistepScheduler(
                    solver_order=order, solver_type=variant, lower_order_final=lower, **common
                )
                configs.append((key, sched, grid))
    for order in (1, 2, 3):
        for grid in ("tmin10", "tmin16"):
            sched = diffusers.DEISMultistepScheduler(solver_order=order, **common)
            configs.append((f"deis_{order}_{grid}_lof", sched, grid))
    for key, sched, grid in configs:
        result = run(sched, grids[grid], x_start)
        if not np.all(np.isfinite(result)):
            raise RuntimeError(f"{key}: diffusers returned non-finite values")
        out[f"out_{key}"] = result
        print(f"{key}: mean {result.mean(axis=0)}")
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **out)
    print(f"wrote {args.out} ({pathlib.Path(args.out).stat().st_size} bytes)")


if __name__ == "__main__":
    main()
