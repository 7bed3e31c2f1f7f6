"""Block-wise decoding of diffusion LMs: speed at L = 1024 and quality on an enumerable target.

Speed (`--length 1024`, a `--depth 12` transformer of width `--dim 64`, B = `--batch`, on this
machine's CPU): tokens/s, network calls (NFE) and network token evaluations per generated token
for
  (a) full-sequence masked sampling (`dd.sample`, ancestral, one pass over all L per step),
  (b) block diffusion without a cache (`dd.block_sample` + `uncached_block_model`: the
      block-causal network reruns the whole sequence at every step),
  (c) block diffusion with the KV cache (`bd3_block_model`: K queries per step, the clean prefix
      appended once),
  (d) semi-autoregressive decoding of a full-attention network with Fast-dLLM's prefix cache
      (`semi_ar_sample(cache="prefix")`) and (d') its dual cache,
  (e) confidence-threshold parallel decoding (semi-AR, dual cache, reveal every token above
      tau).
Every variant takes the same number of steps per block of K = `--block` tokens (a), or the same
total number of steps (a). The networks have random weights (speed does not depend on them)
except that the output head is scaled so the predictions are confident, which is what lets
threshold decoding reveal several tokens per step; its NFE here illustrates the mechanism, the
quality part below gives it for real models.

Quality: the target is a random Markov chain over V = 4 symbols and L = 6 positions (4,096
sequences; every probability known), TV between 2e4 samples and the target (sampling noise
alone: the "noise" row). Each variant runs with the exact denoiser (enumeration) and with tiny
transformers trained on the chain for `--train_steps` steps (a full-attention MDLM network for
(a), (d), (e); a block-diffusion network with K = 2 for (b), (c)), so the approximation error of
the caches shows next to the sampling error of the decoding scheme.

  python -m experiments.benchmarks.block_decoding [--quick]

Prints two tables and writes experiments/benchmarks/results/block_decoding.json and
block_decoding.png (TV against token evaluations per token).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import diffax.discrete as dd
from diffax.core.compilation import enable_compilation_cache
from diffax.discrete.blocks import per_token_time
from diffax.discrete.blocks.semi_ar import semi_ar_sample
from diffax.nn import DiffusionTransformer
from diffax.nn.attention import MaskSpec
from diffax.nn.block_models import bd3_block_model, fast_dllm_model, two_stream_fn

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def build(vocab: int, length: int, dim: int, depth: int, seed: int = 0, sharpen: float = 0.0):
    """A time-free transformer; `sharpen` > 0 gives the zero-initialised head random weights."""
    model = DiffusionTransformer(
        vocab + 1,
        vocab,
        length,
        dim,
        depth,
        4,
        rngs=nnx.Rngs(seed),
        time_conditioning=False,
        attention="xla",
    )
    if sharpen:
        key = jax.random.key(seed + 1)
        model.head.kernel[...] = sharpen * jax.random.normal(key, model.head.kernel[...].shape)
    return model


def variants(model_full, model_block, process, shape, block, steps_per_block, threshold):
    """name -> (jitted sampler `key -> (tokens, info)`, short description)."""
    length = shape[1]
    num_blocks = length // block
    block_causal = MaskSpec("block_causal", block)
    uncached = dd.uncached_block_model(
        lambda x, t: model_block(x, t, mask=block_causal), process.mask_id
    )
    cached = bd3_block_model(model_block, block)
    fast = fast_dllm_model(model_full)
    common = {"block_size": block, "steps_per_block": steps_per_block}
    out = {
        "a_full_sequence": lambda key: dd.sample(
            key,
            process,
            model_full,
            shape,
            sampler="ancestral",
            num_steps=num_blocks * steps_per_block,
        ),
        "b_block_uncached": lambda key: dd.block_sample(key, process, uncached, shape, **common),
        "c_block_kv_cache": lambda key: dd.block_sample(key, process, cached, shape, **common),
        "d_semi_ar_prefix": lambda key: semi_ar_sample(
            key, process, fast, shape, cache="prefix", **common
        ),
        "d_semi_ar_dual": lambda key: semi_ar_sample(
            key, process, fast, shape, cache="dual", **common
        ),
        "e_threshold_dual": lambda key: semi_ar_sample(
            key, process, fast, shape, cache="dual", threshold=threshold, **common
        ),
    }
    return {name: jax.jit(fn) for name, fn in out.items()}


def time_it(fn, repeats: int, budget_s: float = 30.0):
    """(median seconds of up to `repeats` runs after a compile run, compile-run seconds, info).

    Stops repeating once the timed runs took `budget_s` in total (slow variants run once).
    """
    start = time.perf_counter()
    tokens, info = fn(jax.random.key(0))
    jax.block_until_ready(tokens)
    compile_s = time.perf_counter() - start
    times = []
    for r in range(repeats):
        start = time.perf_counter()
        tokens, info = fn(jax.random.key(r + 1))
        jax.block_until_ready(tokens)
        times.append(time.perf_counter() - start)
        if sum(times) > budget_s:
            break
    return float(np.median(times)), compile_s, jax.tree.map(np.asarray, info)


def speed(args):
    vocab, shape = 64, (args.batch, args.length)
    process = dd.Masked(vocab)
    model_full = build(vocab, args.length, args.dim, args.depth, seed=0, sharpen=4.0)
    model_block = build(vocab, args.length, args.dim, args.depth, seed=1, sharpen=4.0)
    fns = variants(
        model_full, model_block, process, shape, args.block, args.steps_per_block, args.threshold
    )
    rows = {}
    print(
        f"\nspeed: L={args.length}, B={args.batch}, depth {args.depth}, width {args.dim}, "
        f"K={args.block}, {args.steps_per_block} steps per block"
    )
    print(
        f"{'variant':<18} {'tokens/s':>9} {'s':>7} {'1st run s':>9} {'NFE':>6} "
        f"{'NFE/tok':>8} {'evals/tok':>9}"
    )
    for name, fn in fns.items():
        if name in args.skip:
            continue
        seconds, compile_s, info = time_it(fn, args.repeats)
        # Timed runs and the compile run draw the same NFE (same shapes; threshold decoding's
        # count depends on the draws, this is the last run's).
        generated = args.batch * args.length
        row = {
            "seconds": seconds,
            "first_run_seconds": compile_s,
            "tokens_per_s": generated / seconds,
            "nfe": int(info["nfe"]),
            "nfe_per_token": int(info["nfe"]) / args.length,
            # dd.sample reports no token evaluations: each call processes all L positions.
            "token_evals_per_token": float(info.get("token_evals", int(info["nfe"]) * args.length))
            / args.length,
        }
        rows[name] = row
        print(
            f"{name:<18} {row['tokens_per_s']:>9.1f} {seconds:>7.2f} {compile_s:>9.1f} "
            f"{row['nfe']:>6} {row['nfe_per_token']:>8.3f} {row['token_evals_per_token']:>9.2f}"
        )
    if "b_block_uncached" in rows and "c_block_kv_cache" in rows:
        ratio = rows["b_block_uncached"]["seconds"] / rows["c_block_kv_cache"]["seconds"]
        print(f"KV cache speed-up over uncached block decoding (same run): {ratio:.1f}x")
        rows["kv_cache_speedup"] = ratio
    return rows


# ---- quality on an enumerable target --------------------------------------------------------


def train(model, loss_fn, data_key, target, steps: int, batch: int = 256, lr: float = 3e-3):
    """Adam on `loss_fn(model, key, x0)` with fresh exact samples of the target each step."""
    optimizer = nnx.Optimizer(model, optax.adam(lr), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, key):
        k_data, k_loss = jax.random.split(key)
        x0 = target.sample(k_data, batch)
        loss, grads = nnx.value_and_grad(lambda m: loss_fn(m, k_loss, x0))(model)
        optimizer.update(model, grads)
        return loss

    for i in range(steps):
        loss = step(model, optimizer, jax.random.fold_in(data_key, i))
    return float(loss)


def quality(args):
    vocab, length, block, n = 4, 6, 2, args.samples
    # A peaked chain (concentration 0.1): confident predictions, so threshold decoding can
    # reveal several tokens per step.
    target = dd.EnumeratedTarget.markov_chain(1, vocab, length, concentration=0.1)
    process = dd.Masked(vocab)
    shape = (n, length)
    exact_fn = per_token_time(target.denoiser(process))
    exact_block = dd.uncached_block_model(exact_fn, process.mask_id)
    exact_full = dd.full_cached_model(target.denoiser(process))

    full_net = build(vocab, length, 64, 2, seed=0)
    block_net = build(vocab, length, 64, 2, seed=1)
    full_loss = train(
        full_net,
        lambda m, k, x0: jnp.mean(dd.masked_elbo(k, process, m, x0)) / length,
        jax.random.key(10),
        target,
        args.train_steps,
    )
    block_loss = train(
        block_net,
        lambda m, k, x0: (
            jnp.mean(
                dd.block_masked_elbo(k, process, two_stream_fn(m, block), x0, block_size=block)
            )
            / length
        ),
        jax.random.key(11),
        target,
        args.train_steps,
    )
    entropy = target.entropy() / length

    # Held-out bounds of the trained networks (nats per token, 16 x 4096 exact samples).
    def bound(fn):
        values = [
            jnp.mean(fn(jax.random.key(100 + i), target.sample(jax.random.key(200 + i), 4096)))
            for i in range(16)
        ]
        return float(np.mean(values)) / length

    full_loss = bound(jax.jit(lambda k, x0: dd.masked_elbo(k, process, full_net, x0)))
    block_loss = bound(
        jax.jit(
            lambda k, x0: dd.block_masked_elbo(
                k, process, two_stream_fn(block_net, block), x0, block_size=block
            )
        )
    )
    print(
        f"\nquality: Markov chain V={vocab}, L={length}, K={block}, {n} samples; entropy "
        f"{entropy:.4f} nats/token; held-out NELBO of the trained MDLM {full_loss:.4f}, BD3 "
        f"{block_loss:.4f}"
    )
    causal = MaskSpec("block_causal", block)
    trained_block = dd.uncached_block_model(
        lambda x, t: block_net(x, t, mask=causal), process.mask_id
    )
    spb = 1  # both tokens of a block in one step: the decoding scheme's own error shows
    cases = {
        "a_full_sequence (3 steps)": lambda m, key: dd.sample(
            key, process, m["full_fn"], shape, sampler="ancestral", num_steps=3
        ),
        "a_full_sequence (6 steps)": lambda m, key: dd.sample(
            key, process, m["full_fn"], shape, sampler="ancestral", num_steps=6
        ),
        "a_first_hitting": lambda m, key: dd.sample(
            key, process, m["full_fn"], shape, sampler="first_hitting", num_steps=6
        ),
        "b_block_uncached": lambda m, key: dd.block_sample(
            key, process, m["block_uncached"], shape, block_size=block, steps_per_block=spb
        ),
        "c_block_kv_cache": lambda m, key: dd.block_sample(
            key, process, m["block_cached"], shape, block_size=block, steps_per_block=spb
        ),
        "c_block_first_hitting": lambda m, key: dd.block_sample(
            key,
            process,
            m["block_cached"],
            shape,
            block_size=block,
            steps_per_block=1,
            sampler="first_hitting",
        ),
        "d_semi_ar_none": lambda m, key: semi_ar_sample(
            key, process, m["full_exact"], shape, block_size=block, steps_per_block=2
        ),
        "d_semi_ar_prefix": lambda m, key: semi_ar_sample(
            key,
            process,
            m["full_cached"],
            shape,
            block_size=block,
            steps_per_block=2,
            cache="prefix",
        ),
        "d_semi_ar_dual": lambda m, key: semi_ar_sample(
            key,
            process,
            m["full_cached"],
            shape,
            block_size=block,
            steps_per_block=2,
            cache="dual",
        ),
        "e_threshold_0.9": lambda m, key: semi_ar_sample(
            key,
            process,
            m["full_cached"],
            shape,
            block_size=block,
            steps_per_block=2,
            cache="dual",
            threshold=0.9,
        ),
        "e_threshold_0.7": lambda m, key: semi_ar_sample(
            key,
            process,
            m["full_cached"],
            shape,
            block_size=block,
            steps_per_block=2,
            cache="dual",
            threshold=0.7,
        ),
    }
    models = {
        "exact": {
            "full_fn": target.denoiser(process),
            "block_uncached": exact_block,
            "block_cached": exact_block,  # no network, nothing to cache: the exact reference
            "full_exact": exact_full,
            "full_cached": exact_full,
        },
        "trained": {
            "full_fn": lambda x, t: full_net(x, t),
            "block_uncached": trained_block,
            "block_cached": bd3_block_model(block_net, block),
            "full_exact": dd.full_cached_model(lambda x, t: full_net(x, t)),
            "full_cached": fast_dllm_model(full_net),
        },
    }
    noise = target.sampling_noise(n)["tv"]
    rows = {"noise": {"tv": noise[0], "tv_std": noise[1]}}
    print(
        f"{'variant':<28} {'TV exact':>9} {'NFE':>5} {'TV trained':>10} {'NFE':>5} {'evals/tok':>9}"
    )
    print(f"{'noise (exact samples)':<28} {noise[0]:>9.4f}")
    for name, fn in cases.items():
        row = {}
        for kind, m in models.items():
            tokens, info = jax.jit(lambda key, fn=fn, m=m: fn(m, key))(jax.random.key(1))
            info = jax.tree.map(np.asarray, info)
            row[f"tv_{kind}"] = target.total_variation(np.asarray(tokens))
            row[f"nfe_{kind}"] = int(info["nfe"])
            evals = info.get("token_evals", int(info["nfe"]) * length)
            row[f"token_evals_per_token_{kind}"] = float(evals) / length
        rows[name] = row
        print(
            f"{name:<28} {row['tv_exact']:>9.4f} {row['nfe_exact']:>5} {row['tv_trained']:>10.4f} "
            f"{row['nfe_trained']:>5} "
            f"{row['token_evals_per_token_trained']:>9.2f}"
        )
    return rows, {"entropy": entropy, "mdlm_loss": full_loss, "bd3_loss": block_loss}


def plot(quality_rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for name, row in quality_rows.items():
        if name == "noise":
            continue
        x = row["token_evals_per_token_trained"]
        ax.scatter(x, row["tv_trained"], marker="o")
        ax.scatter(x, row["tv_exact"], marker="x", color="gray")
        ax.annotate(name, (x, row["tv_trained"]), fontsize=6)
    ax.axhline(quality_rows["noise"]["tv"], color="k", lw=0.8, ls="--", label="sampling noise")
    ax.set_xlabel("network token evaluations per generated token (trained networks)")
    ax.set_ylabel("TV to the target (o trained, x exact denoiser)")
    ax.set_title("Block-wise decoding: quality vs cost (V=4, L=6 Markov chain)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--depth", type=int, default=12)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--block", type=int, default=16)
    parser.add_argument("--steps_per_block", type=int, default=2)
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--train_steps", type=int, default=2000)
    parser.add_argument("--skip", nargs="*", default=[], help="speed variants to skip")
    parser.add_argument("--quick", action="store_true", help="L=256, depth 4, fewer samples")
    parser.add_argument(
        "--quality_only", action="store_true", help="keep the speed rows of the last JSON"
    )
    args = parser.parse_args(argv)
    # A rerun loads the compiled programs from JAX's persistent cache (timings exclude compiles).
    enable_compilation_cache()
    if args.quick:
        args.length, args.depth, args.samples, args.train_steps = 256, 4, 4000, 200
    results = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"jax {jax.__version__} ({jax.default_backend()})",
        "args": vars(args),
    }
    suffix = "_quick" if args.quick else ""
    path = os.path.join(RESULTS, f"block_decoding{suffix}.json")
    if args.quality_only:
        with open(path) as f:
            results["speed"] = json.load(f)["speed"]
    else:
        results["speed"] = speed(args)
    results["quality"], results["training"] = quality(args)
    os.makedirs(RESULTS, exist_ok=True)
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
    plot(results["quality"], os.path.join(RESULTS, f"block_decoding{suffix}.png"))
    print(f"wrote {RESULTS}/block_decoding{suffix}.json and .png")


if __name__ == "__main__":
    main()
