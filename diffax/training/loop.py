"""The train / eval / sample entry points shared by every task.

`Run` holds what all three modes need: the task, the mesh, the optimizer, the shardings and the
checkpointer. `train` resumes from the newest complete checkpoint of its workdir (same step, same
data position, same RNG), checkpoints every `checkpoint.every_steps` steps, and on SIGTERM/SIGINT
writes a checkpoint before it exits, so a preempted run loses no finished step.
"""

from __future__ import annotations

import functools
import math
import os
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from diffax.training import mesh as mesh_lib
from diffax.training.checkpoint import Checkpointer, abstract_like
from diffax.training.metrics import MetricWriter
from diffax.training.optimizer import adamw
from diffax.training.step import init_train_state, jit_train_step, make_train_step, state_shardings
from diffax.training.tasks import build_task, global_array
from diffax.training.workdir import prepare_workdir


def _is_primary() -> bool:
    return jax.process_index() == 0


def log(msg: str) -> None:
    """Prints on the primary process only."""
    if _is_primary():
        print(msg, flush=True)


class Run:
    """Everything derived from a config and a workdir, shared by train, eval and sample."""

    def __init__(self, config, workdir: str, *, for_training: bool):
        self.config, self.workdir = config, workdir
        # Check the workdir first (so a foreign one is refused before any work), but record the
        # config only once the task has accepted it, so a bad config leaves nothing behind.
        prepare_workdir(workdir, config.to_dict(), write=False)
        self.task = build_task(config)
        self.mesh = mesh_lib.make_mesh(dict(config.mesh))
        self.data_parallel = self.mesh.shape["data"] * self.mesh.shape["fsdp"]
        t = config.train
        if t.batch_size % (self.data_parallel * t.accum_steps):
            raise ValueError(
                f"train.batch_size={t.batch_size} is not divisible by data-parallel size "
                f"{self.data_parallel} (mesh data x fsdp) times train.accum_steps={t.accum_steps}"
            )
        if t.batch_size % jax.process_count():
            raise ValueError(
                f"train.batch_size={t.batch_size} is not divisible by the "
                f"{jax.process_count()} processes"
            )
        o = config.optimizer
        self.tx = adamw(
            o.lr,
            warmup_steps=o.warmup_steps,
            num_steps=t.num_steps,
            decay=o.decay,
            weight_decay=o.weight_decay,
            b1=o.b1,
            b2=o.b2,
            grad_clip=o.grad_clip,
        )
        self.replicated = mesh_lib.replicated(self.mesh)
        self.batch_sharding = mesh_lib.batch_sharding(self.mesh)
        mdef = self.task.model_def
        params_sharding = jax.tree.unflatten(
            jax.tree.structure(jax.eval_shape(self.task.init_params)),
            jax.tree.leaves(
                mesh_lib.param_shardings(mdef.abstract_params, config.mesh.rules, self.mesh)
            ),
        )
        self.abstract_state = jax.eval_shape(
            lambda: init_train_state(self.task.init_params(), self.tx, config.seed)
        )
        self.state_sharding = state_shardings(
            self.abstract_state, params_sharding, self.tx, self.replicated
        )
        if for_training and _is_primary():
            prepare_workdir(workdir, config.to_dict(), write=True)
        c = config.checkpoint
        self._sample_fns = {}
        self.checkpointer = Checkpointer(
            os.path.join(workdir, "checkpoints"), keep=c.keep, keep_every=c.keep_every
        )

    # -- state ----------------------------------------------------------------------------------
    def init_state(self) -> dict:
        """A fresh train state, created directly with its shardings on the mesh."""
        init = lambda: init_train_state(self.task.init_params(), self.tx, self.config.seed)
        return jax.jit(init, out_shardings=self.state_sharding)()

    def restore(self, step: int, data_iterator) -> dict:
        """Train state of checkpoint `step`, laid out on the current mesh."""
        target = abstract_like(self.abstract_state, self.state_sharding)
        try:
            state, _ = self.checkpointer.restore(step, target, data_iterator)
        except Exception as e:  # orbax/tensorstore raise many types; report them as one.
            raise ValueError(
                f"the checkpoint at step {step} in {self.checkpointer.directory} could not be "
                f"restored ({type(e).__name__}: {str(e)[:300]}). It is corrupt or was not written "
                "by this config; move that step directory away to resume from an earlier one, or "
                "use a new --workdir."
            ) from e
        return state

    def data_iterator(self):
        """This process's iterator over training batches."""
        per_process = self.config.train.batch_size // jax.process_count()
        ds = self.task.train_dataset(per_process, jax.process_index(), jax.process_count())
        return iter(ds)

    def latest_params(self, use_ema: bool) -> tuple[Any, int]:
        """Parameters (EMA or raw) of the newest checkpoint and its step; errors if none."""
        step = self.checkpointer.latest_step()
        if step is None:
            raise FileNotFoundError(
                f"workdir {self.workdir!r} has no checkpoint; run --mode=train first"
            )
        state = self.restore(step, self.data_iterator())
        return (state["ema"] if use_ema else state["params"]), step

    # -- evaluation and sampling ---------------------------------------------------------------
    @functools.cached_property
    def _eval_fn(self):
        """Jitted `(params, key, batch) -> summed nats`, compiled once per run."""
        num_samples = self.config.eval.num_samples
        return jax.jit(
            lambda p, k, b: jnp.sum(self.task.eval_nats(p, k, b, num_samples)),
            in_shardings=(None, self.replicated, self.batch_sharding),
            out_shardings=self.replicated,
        )

    def evaluate(self, params, step: int) -> dict[str, float]:
        """Held-out negative ELBO in bits per unit, plus the task's baselines."""
        e = self.config.eval
        batches = self.task.eval_batches(e.batch_size)
        if e.max_batches > 0:
            batches = batches[: e.max_batches]
        key = jax.random.key(self.config.seed + 1)
        pc, pi = jax.process_count(), jax.process_index()
        total = jnp.zeros(())  # summed on device: one host transfer per evaluation
        for i, batch in enumerate(batches):
            n = batch.shape[0] // pc
            local = global_array(batch[pi * n : (pi + 1) * n], self.batch_sharding)
            total = total + self._eval_fn(params, jax.random.fold_in(key, i), local)
        total = float(total)
        units = sum(b.shape[0] for b in batches) * self.task.tokens_per_example()
        result = {
            f"{self.task.metric}_bits_per_{self.task.unit}": total / (units * math.log(2.0)),
            "num_sequences": sum(b.shape[0] for b in batches),
        }
        result.update(self.task.baselines())
        return result

    def sample(self, params, step: int, num: int) -> tuple[str, list[str], int]:
        """Draws `num` samples, writes them under `workdir/samples`, returns (path, lines, nfe)."""
        if num not in self._sample_fns:
            self._sample_fns[num] = jax.jit(
                lambda p, k: self.task.sample(p, k, num), out_shardings=self.replicated
            )
        samples, info = self._sample_fns[num](params, jax.random.key(self.config.seed + 2))
        samples = np.asarray(jax.device_get(samples))
        path, lines = "", []
        if _is_primary():
            path, lines = self.task.write_samples(
                samples, os.path.join(self.workdir, "samples"), step
            )
        return path, lines, int(info["nfe"])


class _StopSignal:
    """Turns SIGTERM/SIGINT into a flag the loop checks between steps (preemption)."""

    def __init__(self):
        self.received: int | None = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        self.received = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _report_eval(result: dict[str, float], task) -> None:
    unit = task.unit
    elbo = result[f"{task.metric}_bits_per_{unit}"]
    label = {"elbo": "ELBO", "nll": "PF-ODE NLL"}.get(task.metric, task.metric)
    line = f"held-out {label}: {elbo:.4f} bits/{unit} over {result['num_sequences']} sequences"
    if "unigram_entropy" in result:
        h = result["unigram_entropy"]
        line += (
            f"; unigram entropy of the held-out text: {h:.4f} bits/{unit} "
            f"({label} is {h - elbo:.4f} below)"
        )
    if "true_entropy" in result:
        h = result["true_entropy"]
        line += f"; true entropy of the data: {h:.4f} bits/{unit} (gap {elbo - h:.4f})"
    log(line)


def train(config, workdir: str) -> dict[str, Any]:
    """Trains (or resumes) the run in `workdir`; returns the final evaluation."""
    run = Run(config, workdir, for_training=True)
    with jax.set_mesh(run.mesh):
        return _train(config, workdir, run)


def _train(config, workdir: str, run: Run) -> dict[str, Any]:
    t, task = config.train, run.task
    log(
        f"task={config.task} params={run.task.model_def.count():,} devices={jax.device_count()} "
        f"mesh={dict(run.mesh.shape)} processes={jax.process_count()}"
    )
    data_it = run.data_iterator()
    start = run.checkpointer.latest_step()
    if start is None:
        state, start = run.init_state(), 0
    else:
        state = run.restore(start, data_it)
        log(f"resumed from checkpoint at step {start}")
    step_fn = jit_train_step(
        make_train_step(task.loss, run.tx, ema_decay=t.ema_decay, accum_steps=t.accum_steps),
        run.state_sharding,
        run.batch_sharding,
        run.replicated,
    )
    writer = MetricWriter(workdir, enabled=_is_primary())
    bar = None
    if t.progress_bar and _is_primary():
        from tqdm import tqdm

        bar = tqdm(total=t.num_steps, initial=start, desc="train", dynamic_ncols=True)
    c, e, s = config.checkpoint, config.eval, config.sample
    meta = lambda step: {"step": step, "config_task": config.task}
    step, last_time, last_step, acc = start, time.time(), start, []
    with _StopSignal() as stop:
        while step < t.num_steps:
            batch = global_array(next(data_it), run.batch_sharding)
            state, metrics = step_fn(state, batch)
            step += 1
            acc.append(metrics)
            if step % t.log_every == 0 or step == t.num_steps:
                m = {k: float(np.mean([float(x[k]) for x in acc])) for k in acc[0]}
                m["skipped"] = int(acc[-1]["skipped"])
                now = time.time()
                rate = (step - last_step) / max(now - last_time, 1e-9)
                m.update(
                    steps_per_sec=rate,
                    examples_per_sec=rate * t.batch_size,
                    tokens_per_sec=rate * t.batch_size * task.tokens_per_example(),
                )
                writer.write(step, m)
                if bar is not None:
                    bar.set_postfix(loss=f"{m['loss']:.4f}", steps_s=f"{rate:.2f}")
                last_time, last_step, acc = now, step, []
            if bar is not None:
                bar.update(1)
            if step % c.every_steps == 0 or step == t.num_steps:
                run.checkpointer.save(step, state, data_it, meta(step))
            if e.every_steps and step % e.every_steps == 0 and step < t.num_steps:
                params = state["ema"] if e.use_ema else state["params"]
                writer.write(step, run.evaluate(params, step), prefix="eval")
            if s.every_steps and step % s.every_steps == 0 and step < t.num_steps:
                params = state["ema"] if e.use_ema else state["params"]
                path, lines, _ = run.sample(params, step, s.num_samples)
                writer.write_text(step, "samples", "\n\n".join(lines))
            if stop.received is not None:
                log(f"signal {stop.received} received: checkpointing step {step} and stopping")
                run.checkpointer.save(step, state, data_it, meta(step))
                run.checkpointer.close()
                writer.close()
                if bar is not None:
                    bar.close()
                return {"stopped_at": step}
    if bar is not None:
        bar.close()
    run.checkpointer.wait()
    params = state["ema"] if e.use_ema else state["params"]
    result = run.evaluate(params, step)
    writer.write(step, result, prefix="eval")
    _report_eval(result, task)
    path, lines, nfe = run.sample(params, step, s.num_samples)
    writer.write_text(step, "samples", "\n\n".join(lines))
    log(f"wrote {s.num_samples} samples ({nfe} network evaluations) to {path}:")
    for line in lines[: s.num_print]:
        log(f"  | {line}")
    run.checkpointer.close()
    writer.close()
    return result


def evaluate(config, workdir: str) -> dict[str, float]:
    """Evaluates the newest checkpoint of `workdir` on the held-out data and prints the ELBO."""
    run = Run(config, workdir, for_training=False)
    with jax.set_mesh(run.mesh):
        return _evaluate(config, workdir, run)


def _evaluate(config, workdir: str, run: Run) -> dict[str, float]:
    params, step = run.latest_params(config.eval.use_ema)
    result = run.evaluate(params, step)
    log(f"checkpoint step {step}")
    _report_eval(result, run.task)
    run.checkpointer.close()
    return result


def sample(config, workdir: str) -> list[str]:
    """Samples from the newest checkpoint of `workdir`, writes them there and prints a few."""
    run = Run(config, workdir, for_training=False)
    with jax.set_mesh(run.mesh):
        return _sample(config, workdir, run)


def _sample(config, workdir: str, run: Run) -> list[str]:
    params, step = run.latest_params(config.eval.use_ema)
    path, lines, nfe = run.sample(params, step, config.sample.num_samples)
    log(
        f"checkpoint step {step}: wrote {config.sample.num_samples} samples "
        f"({nfe} network evaluations) to {path}:"
    )
    for line in lines[: config.sample.num_print]:
        log(f"  | {line}")
    run.checkpointer.close()
    return lines
