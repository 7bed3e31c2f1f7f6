"""The train / eval / sample entry points shared by every task.

`train` resumes from the newest complete checkpoint of its workdir (same step, same data
position, same RNG), checkpoints every `checkpoint.every_steps` steps, and on SIGTERM/SIGINT
writes a checkpoint before it exits, so a preempted run loses no finished step. With several
processes the stop is agreed through JAX's preemption sync point, so every process saves the
same step (see `diffax.training.preemption`). `evaluate` and `sample` restore parameters only
(see `diffax.training.run.Run`). Workdirs may be URLs (`gs://bucket/run`); only the primary
process writes logs, metrics, TensorBoard events, samples and profiles.
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import numpy as np
from etils import epath

from diffax.training.divergence import SkipMonitor, TrainingDiverged, check_eval
from diffax.training.mesh import global_array
from diffax.training.metrics import MetricWriter
from diffax.training.preemption import StopSignal
from diffax.training.run import Run, is_primary
from diffax.training.step import jit_train_step, make_train_step
from diffax.training.validate import validate_config
from diffax.training.workdir import (
    WorkdirLock,
    check_workdir,
    has_checkpoint,
    prepare_workdir,
    remove_new_entries,
    snapshot_entries,
    workdir_path,
)

__all__ = ["Run", "TrainingDiverged", "evaluate", "sample", "train"]


def log(msg: str) -> None:
    """Prints on the primary process only."""
    if is_primary():
        print(msg, flush=True)


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


def train(
    config, workdir: str | os.PathLike, *, profile_steps: tuple[int, int] | None = None
) -> dict[str, Any]:
    """Trains (or resumes) the run in `workdir`; returns the final evaluation.

    Args:
      config: the run's config (see configs/base.py).
      workdir: the run directory, a local path or a URL such as `gs://bucket/run`.
      profile_steps: `(first, end)`: the primary process records a `jax.profiler` trace of the
        train steps `first, ..., end - 1` (0-based, as counted by `state["step"]` before the
        update) under `workdir/profile`. None: no trace.

    Returns:
      The final evaluation, or `{"stopped_at": step}` after a preemption.

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
    profile_steps = check_profile_steps(profile_steps)
    workdir = workdir_path(workdir)
    check_workdir(workdir, for_training=True)
    primary = is_primary()
    before = snapshot_entries(workdir)
    lock = WorkdirLock(workdir)
    if primary:
        workdir.mkdir(parents=True, exist_ok=True)
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
            return _train(config, workdir, run, data_it, state, start, first_batch, profile_steps)
    finally:
        if run is not None:
            run.close()
        lock.release()
        if not started and primary and not has_checkpoint(workdir / "checkpoints"):
            remove_new_entries(workdir, before)


def check_profile_steps(profile_steps) -> tuple[int, int] | None:
    """`(first, end)` with `0 <= first < end`, from a pair or a "first,end" string; None stays.

    Raises:
      ValueError: naming `--profile_steps` and the allowed form.
    """
    if profile_steps is None or profile_steps == "":
        return None
    try:
        if isinstance(profile_steps, str):
            first, end = (int(x) for x in profile_steps.split(","))
        else:
            first, end = (int(x) for x in profile_steps)
    except (TypeError, ValueError):
        first, end = -1, -1
    if not 0 <= first < end:
        raise ValueError(
            f"--profile_steps={profile_steps!r} is not allowed; allowed values: two step numbers "
            "FIRST,END with 0 <= FIRST < END (the trace covers steps FIRST..END-1)"
        )
    return first, end


class _Profiler:
    """Starts and stops a `jax.profiler` trace around a range of train steps (primary only)."""

    def __init__(self, steps: tuple[int, int] | None, directory: epath.Path, enabled: bool):
        self.steps, self.directory = (steps if enabled else None), directory
        self.active = False

    def before_step(self, step: int) -> None:
        if self.steps and not self.active and self.steps[0] <= step < self.steps[1]:
            self.directory.mkdir(parents=True, exist_ok=True)
            jax.profiler.start_trace(os.fspath(self.directory))
            self.active = True

    def after_step(self, step: int, state) -> None:
        if self.active and step >= self.steps[1]:
            self.stop(state)

    def stop(self, state=None) -> None:
        if self.active:
            if state is not None:
                jax.block_until_ready(state)
            jax.profiler.stop_trace()
            self.active = False
            log(
                f"wrote a profiler trace of steps {self.steps[0]}..{self.steps[1] - 1} to "
                f"{self.directory}"
            )


def _start(config, run: Run):
    """Restores or creates the state, reads the first batch, checks the rest, then writes."""
    data_it = run.data_iterator()
    start = run.checkpointer.latest_step() if has_checkpoint(run.workdir / "checkpoints") else None
    if start is None:
        state, start = run.init_state(), 0
    else:
        state = run.restore(start, data_it)
        log(f"resumed from checkpoint at step {start}")
    first_batch = next(data_it) if start < config.train.num_steps else None
    if first_batch is not None:
        run.check_before_start(first_batch)
    if is_primary():
        prepare_workdir(run.workdir, config.to_dict(), write=True)
    return data_it, state, start, first_batch


def parameter_summary(groups: dict[str, int]) -> str:
    """The start line's parameter counts, from `ModelDef.count_groups()`.

    Args:
      groups: {"total", "embedding", "conditioning", ...} counts.

    Returns:
      "params=N (without embeddings: N; without embeddings and adaLN: N)".
    """
    total = groups["total"]
    no_embed = total - groups.get("embedding", 0)
    body = no_embed - groups.get("conditioning", 0)
    return (
        f"params={total:,} (without embeddings: {no_embed:,}; "
        f"without embeddings and adaLN: {body:,})"
    )


def _train(config, workdir, run: Run, data_it, state, start: int, first_batch, profile_steps):
    t, task = config.train, run.task
    log(
        f"task={config.task} {parameter_summary(task.model_def.count_groups())} "
        f"devices={jax.device_count()} mesh={dict(run.mesh.shape)} "
        f"processes={jax.process_count()}"
    )
    step_fn = jit_train_step(
        make_train_step(task.loss, run.tx, ema_decay=t.ema_decay, accum_steps=t.accum_steps),
        run.state_sharding,
        run.batch_sharding,
        run.replicated,
    )
    writer = MetricWriter(workdir, enabled=is_primary())
    bar = None
    if t.progress_bar and is_primary():
        from tqdm import tqdm

        bar = tqdm(total=t.num_steps, initial=start, desc="train", dynamic_ncols=True)
    c, e, s = config.checkpoint, config.eval, config.sample
    monitor = SkipMonitor(t.dead_run_window, t.max_skipped_fraction, int(state["skipped"]))
    profiler = _Profiler(profile_steps, workdir / "profile", is_primary())
    step, last_time, last_step, acc = start, time.time(), start, []
    try:
        with StopSignal() as stop:
            while step < t.num_steps:
                batch = first_batch if step == start else next(data_it)
                profiler.before_step(step)
                with jax.profiler.StepTraceAnnotation("train", step_num=step):
                    state, metrics = step_fn(state, global_array(batch, run.batch_sharding))
                step += 1
                profiler.after_step(step, state)
                # Every process asks at every step (the sync point protocol needs it).
                preempted = run.checkpointer.reached_preemption(step)
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
                stopping = stop.received is not None or preempted
                if step == t.num_steps and not stopping:
                    break  # the last step is checkpointed after the final evaluation
                params = state["ema"] if e.use_ema else state["params"]
                # Evaluate before checkpointing the same step, so a dead model is not saved.
                if stop.received is not None:
                    log(f"signal {stop.received} received: checkpointing step {step} and stopping")
                elif preempted:
                    log(
                        "preemption notice shared by all processes: checkpointing step "
                        f"{step} and stopping"
                    )
                if e.every_steps and step % e.every_steps == 0 and not stopping:
                    result = run.evaluate(params, step)
                    writer.write(step, result, prefix="eval")
                    check_eval(result, task, step)
                if step % c.every_steps == 0 or stopping:
                    monitor.check(step)
                    run.checkpointer.save(step, state, data_it)
                if s.every_steps and step % s.every_steps == 0 and not stopping:
                    path, lines, _ = run.sample(params, step, s.num_samples)
                    writer.write_text(step, "samples", "\n\n".join(lines))
                if stopping:
                    profiler.stop()
                    return {"stopped_at": step}
        monitor.check(step, final=True)
        params = state["ema"] if e.use_ema else state["params"]
        result = run.evaluate(params, step)
        writer.write(step, result, prefix="eval")
        check_eval(result, task, step)
        run.checkpointer.save(step, state, data_it)
        _report_eval(result, task)
        path, lines, nfe = run.sample(params, step, s.num_samples)
        writer.write_text(step, "samples", "\n\n".join(lines))
        log(f"wrote {s.num_samples} samples ({nfe} network evaluations) to {path}:")
        for line in lines[: s.num_print]:
            log(f"  | {line}")
        return result
    finally:
        profiler.stop()
        if bar is not None:
            bar.close()
        writer.close()


def evaluate(config, workdir: str | os.PathLike) -> dict[str, float]:
    """Evaluates the newest checkpoint of `workdir` on the held-out data and prints the ELBO."""
    validate_config(config)
    workdir = workdir_path(workdir)
    check_workdir(workdir, for_training=False)
    run = Run(config, workdir, for_training=False)
    try:
        with jax.set_mesh(run.mesh):
            return _evaluate(config, workdir, run)
    finally:
        run.close()


def _evaluate(config, workdir, run: Run) -> dict[str, float]:
    params, step = run.latest_params(config.eval.use_ema)
    result = run.evaluate(params, step)
    log(f"checkpoint step {step}")
    _report_eval(result, run.task)
    return result


def sample(config, workdir: str | os.PathLike) -> list[str]:
    """Samples from the newest checkpoint of `workdir`, writes them there and prints a few."""
    validate_config(config)
    workdir = workdir_path(workdir)
    check_workdir(workdir, for_training=False)
    run = Run(config, workdir, for_training=False)
    try:
        with jax.set_mesh(run.mesh):
            return _sample(config, workdir, run)
    finally:
        run.close()


def _sample(config, workdir, run: Run) -> list[str]:
    params, step = run.latest_params(config.eval.use_ema)
    path, lines, nfe = run.sample(params, step, config.sample.num_samples)
    log(
        f"checkpoint step {step}: wrote {config.sample.num_samples} samples "
        f"({nfe} network evaluations) to {path}:"
    )
    for line in lines[: config.sample.num_print]:
        log(f"  | {line}")
    return lines
