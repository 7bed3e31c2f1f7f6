"""The train / eval / sample entry points shared by every task.

`Run` holds what all three modes need: the task, the mesh, the optimizer, the shardings and the
checkpointer. `train` resumes from the newest complete checkpoint of its workdir (same step, same
data position, same RNG), checkpoints every `checkpoint.every_steps` steps, and on SIGTERM/SIGINT
writes a checkpoint before it exits, so a preempted run loses no finished step.
"""

from __future__ import annotations

import collections
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
from diffax.training.validate import validate_config
from diffax.training.workdir import (
    WorkdirLock,
    check_workdir,
    has_checkpoint,
    prepare_workdir,
    remove_new_entries,
    snapshot_entries,
)


def _is_primary() -> bool:
    return jax.process_index() == 0


def log(msg: str) -> None:
    """Prints on the primary process only."""
    if _is_primary():
        print(msg, flush=True)


class Run:
    """Everything derived from a config and a workdir, shared by train, eval and sample."""

    def __init__(self, config, workdir: str, *, for_training: bool):
        self.config, self.workdir, self.for_training = config, workdir, for_training
        # Nothing is written here (the entry points have checked the config and the workdir
        # path): a bad task leaves nothing behind; `train` records the config afterwards.
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
        self._sample_fns = {}
        self._checkpointer = None

    @property
    def checkpointer(self) -> Checkpointer:
        """The run's checkpointer, opened on first use (read-only for eval and sample)."""
        if self._checkpointer is None:
            c = self.config.checkpoint
            self._checkpointer = Checkpointer(
                os.path.join(self.workdir, "checkpoints"),
                keep=c.keep,
                keep_every=c.keep_every,
                read_only=not self.for_training,
            )
        return self._checkpointer

    def close(self) -> None:
        """Finishes pending checkpoint writes and releases the checkpointer."""
        if self._checkpointer is not None:
            self._checkpointer.close()
            self._checkpointer = None

    def check_before_start(self, first_batch) -> None:
        """Traces (without running) the train step, evaluation and sampling on abstract inputs.

        Errors that would otherwise surface only when the code first runs (a sampler option it
        rejects, a held-out set smaller than one evaluation batch, a model that does not fit the
        data's shape) are raised here, before the workdir is written or any step is taken.
        """
        e = self.config.eval
        batches = self.task.eval_batches(e.batch_size)
        if not batches:
            raise ValueError(
                f"eval.batch_size={e.batch_size} is larger than the held-out data (it yields no "
                "full batch); allowed values: at most the number of held-out sequences"
            )
        if batches[0].shape[0] % (self.data_parallel * jax.process_count()):
            raise ValueError(
                f"eval.batch_size={e.batch_size} is not divisible by the data-parallel size "
                f"{self.data_parallel} (mesh data x fsdp)"
            )
        params = self.abstract_state["params"]
        key = jax.random.key(0)
        batch = jax.ShapeDtypeStruct(first_batch.shape, first_batch.dtype)
        jax.eval_shape(lambda p, k, b: self.task.loss(p, k, b), params, key, batch)
        eval_batch = jax.ShapeDtypeStruct(batches[0].shape, batches[0].dtype)
        jax.eval_shape(
            lambda p, k, b: self.task.eval_nats(p, k, b, e.num_samples), params, key, eval_batch
        )
        jax.eval_shape(
            lambda p, k: self.task.sample(p, k, self.config.sample.num_samples), params, key
        )

    # -- state ----------------------------------------------------------------------------------
    def init_state(self) -> dict:
        """A fresh train state, created directly with its shardings on the mesh."""
        init = lambda: init_train_state(self.task.init_params(), self.tx, self.config.seed)
        return jax.jit(init, out_shardings=self.state_sharding)()

    def restore(self, step: int, data_iterator) -> dict:
        """Train state of checkpoint `step`, laid out on the current mesh.

        `data_iterator` (training only) is restored in place; eval and sample pass None.
        """
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

    def latest_params(self, use_ema: bool, attempts: int = 5) -> tuple[Any, int]:
        """Parameters (EMA or raw) of the newest checkpoint and its step; errors if none.

        Reads only (eval and sample). A training run may be writing to the same workdir: when
        the chosen step is deleted under us (the trainer keeps only the newest few), the list of
        steps is re-read and the newest one restored instead.
        """
        if not os.path.isdir(os.path.join(self.workdir, "checkpoints")):
            raise FileNotFoundError(
                f"workdir {self.workdir!r} has no checkpoint; run --mode=train first"
            )
        for attempt in range(attempts):
            self.checkpointer.reload()
            step = self.checkpointer.latest_step()
            if step is None:
                raise FileNotFoundError(
                    f"workdir {self.workdir!r} has no checkpoint; run --mode=train first"
                )
            try:
                state = self.restore(step, None)
            except ValueError:
                self.checkpointer.reload()
                if step in self.checkpointer.all_steps() or attempt == attempts - 1:
                    raise
                continue
            return (state["ema"] if use_ema else state["params"]), step
        raise AssertionError("unreachable")

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


class TrainingDiverged(RuntimeError):
    """The run is dead: too many skipped steps, or a non-finite evaluation."""


class _SkipMonitor:
    """Tracks the NaN/inf guard's skipped steps over a sliding window, off the critical path.

    Each step's cumulative `skipped` counter stays on the device until `check`, which fetches the
    pending ones at once (at log and checkpoint points), so the loop does not wait on every step.
    """

    def __init__(self, window: int, max_fraction: float, start_skipped: int):
        self.window, self.max_fraction = window, max_fraction
        self._pending: list[jax.Array] = []
        self._history = collections.deque([start_skipped], maxlen=window + 1)

    def record(self, skipped: jax.Array) -> None:
        self._pending.append(skipped)

    def check(self, step: int, *, final: bool = False) -> None:
        """Raises `TrainingDiverged` when the skipped fraction is over the limit.

        A full window is needed while training; at the end (`final`) a run shorter than the
        window is judged on all the steps it took.
        """
        self._history.extend(int(x) for x in jax.device_get(self._pending))
        self._pending = []
        steps = len(self._history) - 1
        if steps == 0 or (steps < self.window and not final):
            return
        skipped = self._history[-1] - self._history[0]
        if skipped / steps > self.max_fraction:
            raise TrainingDiverged(
                f"training diverged: {skipped} of the last {steps} steps (up to step {step}) "
                "were skipped for non-finite loss or gradients, more than "
                f"train.max_skipped_fraction={self.max_fraction}; stopped without writing a "
                "checkpoint. Lower optimizer.lr (or raise optimizer.warmup_steps) and restart"
            )


def _check_eval(result: dict[str, float], task, step: int) -> None:
    value = result[f"{task.metric}_bits_per_{task.unit}"]
    if not math.isfinite(value):
        raise TrainingDiverged(
            f"training diverged: the held-out {task.metric} at step {step} is {value}; stopped "
            "without writing a checkpoint. Lower optimizer.lr (or raise optimizer.warmup_steps) "
            "and restart"
        )


def train(config, workdir: str) -> dict[str, Any]:
    """Trains (or resumes) the run in `workdir`; returns the final evaluation.

    Everything that can be checked is checked before the workdir is written: the whole config,
    the workdir path, the task, the first training batch, and a trace of the loss, evaluation and
    sampling. The workdir is locked for the run (`WorkdirLock`: a second training on it is
    refused). If the start fails anyway, what it created in the workdir is removed again.

    Raises:
      TrainingDiverged: too many skipped steps or a non-finite evaluation (see
        `train.max_skipped_fraction`); no checkpoint is written for the failed steps.
      WorkdirLocked: another live training holds the workdir.
    """
    validate_config(config)
    check_workdir(workdir, for_training=True)
    primary = _is_primary()
    before = snapshot_entries(workdir)
    lock = WorkdirLock(workdir)
    if primary:
        os.makedirs(workdir, exist_ok=True)
        try:
            lock.acquire()
        except Exception:
            remove_new_entries(workdir, before)
            raise
    run = None
    started = False
    try:
        run = Run(config, workdir, for_training=True)
        with jax.set_mesh(run.mesh):
            data_it, state, start, first_batch = _start(config, run)
            started = True
            return _train(config, workdir, run, data_it, state, start, first_batch)
    finally:
        if run is not None:
            run.close()
        lock.release()
        if not started and primary and not has_checkpoint(os.path.join(workdir, "checkpoints")):
            remove_new_entries(workdir, before)


def _start(config, run: Run):
    """Restores or creates the state, reads the first batch, checks the rest, then writes."""
    data_it = run.data_iterator()
    ckpt_dir = os.path.join(run.workdir, "checkpoints")
    start = run.checkpointer.latest_step() if has_checkpoint(ckpt_dir) else None
    if start is None:
        state, start = run.init_state(), 0
    else:
        state = run.restore(start, data_it)
        log(f"resumed from checkpoint at step {start}")
    first_batch = next(data_it) if start < config.train.num_steps else None
    if first_batch is not None:
        run.check_before_start(first_batch)
    if _is_primary():
        prepare_workdir(run.workdir, config.to_dict(), write=True)
    return data_it, state, start, first_batch


def _train(config, workdir: str, run: Run, data_it, state, start: int, first_batch):
    t, task = config.train, run.task
    log(
        f"task={config.task} params={run.task.model_def.count():,} devices={jax.device_count()} "
        f"mesh={dict(run.mesh.shape)} processes={jax.process_count()}"
    )
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
    monitor = _SkipMonitor(t.dead_run_window, t.max_skipped_fraction, int(state["skipped"]))
    step, last_time, last_step, acc = start, time.time(), start, []
    try:
        with _StopSignal() as stop:
            while step < t.num_steps:
                batch = first_batch if step == start else next(data_it)
                state, metrics = step_fn(state, global_array(batch, run.batch_sharding))
                step += 1
                acc.append(metrics)
                monitor.record(metrics["skipped"])
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
                    monitor.check(step)
                if bar is not None:
                    bar.update(1)
                if step == t.num_steps and stop.received is None:
                    break  # the last step is checkpointed after the final evaluation
                params = state["ema"] if e.use_ema else state["params"]
                # Evaluate before checkpointing the same step, so a dead model is not saved.
                stopping = stop.received is not None
                if stopping:
                    log(f"signal {stop.received} received: checkpointing step {step} and stopping")
                if e.every_steps and step % e.every_steps == 0 and not stopping:
                    result = run.evaluate(params, step)
                    writer.write(step, result, prefix="eval")
                    _check_eval(result, task, step)
                if step % c.every_steps == 0 or stopping:
                    monitor.check(step)
                    run.checkpointer.save(step, state, data_it, meta(step))
                if s.every_steps and step % s.every_steps == 0 and not stopping:
                    path, lines, _ = run.sample(params, step, s.num_samples)
                    writer.write_text(step, "samples", "\n\n".join(lines))
                if stopping:
                    return {"stopped_at": step}
        monitor.check(step, final=True)
        params = state["ema"] if e.use_ema else state["params"]
        result = run.evaluate(params, step)
        writer.write(step, result, prefix="eval")
        _check_eval(result, task, step)
        run.checkpointer.save(step, state, data_it, meta(step))
        _report_eval(result, task)
        path, lines, nfe = run.sample(params, step, s.num_samples)
        writer.write_text(step, "samples", "\n\n".join(lines))
        log(f"wrote {s.num_samples} samples ({nfe} network evaluations) to {path}:")
        for line in lines[: s.num_print]:
            log(f"  | {line}")
        return result
    finally:
        if bar is not None:
            bar.close()
        writer.close()


def evaluate(config, workdir: str) -> dict[str, float]:
    """Evaluates the newest checkpoint of `workdir` on the held-out data and prints the ELBO."""
    validate_config(config)
    check_workdir(workdir, for_training=False)
    run = Run(config, workdir, for_training=False)
    try:
        with jax.set_mesh(run.mesh):
            return _evaluate(config, workdir, run)
    finally:
        run.close()


def _evaluate(config, workdir: str, run: Run) -> dict[str, float]:
    params, step = run.latest_params(config.eval.use_ema)
    result = run.evaluate(params, step)
    log(f"checkpoint step {step}")
    _report_eval(result, run.task)
    return result


def sample(config, workdir: str) -> list[str]:
    """Samples from the newest checkpoint of `workdir`, writes them there and prints a few."""
    validate_config(config)
    check_workdir(workdir, for_training=False)
    run = Run(config, workdir, for_training=False)
    try:
        with jax.set_mesh(run.mesh):
            return _sample(config, workdir, run)
    finally:
        run.close()


def _sample(config, workdir: str, run: Run) -> list[str]:
    params, step = run.latest_params(config.eval.use_ema)
    path, lines, nfe = run.sample(params, step, config.sample.num_samples)
    log(
        f"checkpoint step {step}: wrote {config.sample.num_samples} samples "
        f"({nfe} network evaluations) to {path}:"
    )
    for line in lines[: config.sample.num_print]:
        log(f"  | {line}")
    return lines
