"""`Run`: everything derived from a config and a workdir, shared by train, eval and sample.

The task, the mesh, the optimizer, the shardings and the checkpointer; restoring parameters,
held-out evaluation and sampling. Eval and sample restore only the train state (read-only
checkpointer) and never build a training data iterator.
"""

from __future__ import annotations

import functools
import math
import os
import tempfile
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from diffax.training import mesh as mesh_lib
from diffax.training.checkpoint import Checkpointer, abstract_like
from diffax.training.mesh import global_array
from diffax.training.optimizer import adamw
from diffax.training.step import init_train_state, state_shardings
from diffax.training.tasks import build_task
from diffax.training.workdir import is_url, prepare_workdir, workdir_path


def is_primary() -> bool:
    """Whether this is process 0 (the one that writes logs, samples and config.json)."""
    return jax.process_index() == 0


class Run:
    """Everything derived from a config and a workdir, shared by train, eval and sample.

    Args:
      config: the run's config.
      workdir: the run directory, a local path or a URL (kept as an `etils.epath.Path`).
      for_training: False for eval and sample (read-only checkpointer, no data iterator).
    """

    def __init__(self, config, workdir: str | os.PathLike, *, for_training: bool):
        workdir = workdir_path(workdir)
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
            moments=o.moment_dtype,
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
                self.workdir / "checkpoints",
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
        batches = self.task.source.eval_batches(e.batch_size, e.max_batches)
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
            lambda p, k, b: self.task.eval_nats(p, k, b, e.num_time_samples),
            params,
            key,
            eval_batch,
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
        # A checkpoint of another layout is refused with the differing parameters named.
        self.checkpointer.check_structure(step, target)
        try:
            state = self.checkpointer.restore(step, target, data_iterator, check=False)
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
        ds = self.task.source.train_dataset(per_process, jax.process_index(), jax.process_count())
        return iter(ds)

    def latest_params(self, use_ema: bool, attempts: int = 5) -> tuple[Any, int]:
        """Parameters (EMA or raw) of the newest checkpoint and its step; errors if none.

        Reads only (eval and sample). A training run may be writing to the same workdir: when
        the chosen step is deleted under us (the trainer keeps only the newest few), the list of
        steps is re-read and the newest one restored instead.
        """
        if not (self.workdir / "checkpoints").is_dir():
            raise FileNotFoundError(
                f"workdir {str(self.workdir)!r} has no checkpoint; run --mode=train first"
            )
        for attempt in range(attempts):
            self.checkpointer.reload()
            step = self.checkpointer.latest_step()
            if step is None:
                raise FileNotFoundError(
                    f"workdir {str(self.workdir)!r} has no checkpoint; run --mode=train first"
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
        num_time_samples = self.config.eval.num_time_samples
        return jax.jit(
            lambda p, k, b: jnp.sum(self.task.eval_nats(p, k, b, num_time_samples)),
            in_shardings=(None, self.replicated, self.batch_sharding),
            out_shardings=self.replicated,
        )

    def evaluate(self, params, step: int) -> dict[str, float]:
        """Held-out negative ELBO in bits per unit, plus the task's baselines."""
        e = self.config.eval
        batches = self.task.source.eval_batches(e.batch_size, e.max_batches)
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
        result.update(self.task.source.baselines())
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
        if is_primary():
            path, lines = self._write_samples(samples, step)
        return path, lines, int(info["nfe"])

    def _write_samples(self, samples: np.ndarray, step: int) -> tuple[str, list[str]]:
        """The source writes local files; for a URL workdir they are copied there afterwards."""
        target = self.workdir / "samples"
        if not is_url(target):
            return self.task.source.write_samples(samples, os.fspath(target), step)
        target.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            path, lines = self.task.source.write_samples(samples, tmp, step)
            for name in sorted(os.listdir(tmp)):
                (target / name).write_bytes(epath.Path(tmp, name).read_bytes())
        return os.fspath(target / os.path.relpath(path, tmp)), lines
