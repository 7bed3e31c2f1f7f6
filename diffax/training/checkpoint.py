"""Checkpoints with orbax `CheckpointManager`: train state and data-iterator position.

Each checkpoint is a step directory holding two items (`args.Composite`): `state` (the train
state pytree, whose `step` is the step) and `data` (the grain iterator state, one file per
process). Checkpoints of earlier versions also hold a `meta` item, which nothing reads. orbax
writes into a temporary directory and renames it when complete, so a save killed half-way is never
listed as a step and `latest_step()` is always a complete checkpoint.
"""

from __future__ import annotations

import os
import time
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from absl import logging


class Checkpointer:
    """Saves and restores training checkpoints under `directory`.

    Args:
      directory: where step directories are written.
      keep: keep the newest `keep` checkpoints.
      keep_every: additionally keep every checkpoint whose step is a multiple of this (0: none).
      async_save: write in a background thread (training continues meanwhile).
      read_only: for eval and sample: never create, delete or clean anything under `directory`.
        In particular the temporary directory of a save in flight (a training run writing
        into the same workdir) is left alone; a writable manager would delete it on start.
    """

    def __init__(
        self,
        directory: str,
        *,
        keep: int,
        keep_every: int = 0,
        async_save: bool = True,
        read_only: bool = False,
    ):
        self.read_only = read_only
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            keep_period=keep_every or None,
            enable_async_checkpointing=async_save and not read_only,
            create=not read_only,
            cleanup_tmp_directories=not read_only,
            read_only=read_only,
        )
        self.directory = os.path.abspath(directory)
        handlers = {"state": ocp.StandardCheckpointHandler()}
        if not read_only:
            handlers["data"] = grain.checkpoint.CheckpointHandler()
        verbosity = logging.get_verbosity()
        if read_only:  # orbax warns at INFO/WARNING that a read-only manager will not save
            logging.set_verbosity(logging.ERROR)
        try:
            self._manager = self._retry(
                lambda: ocp.CheckpointManager(
                    self.directory, options=options, item_handlers=handlers
                )
            )
        finally:
            logging.set_verbosity(verbosity)

    def _retry(self, fn, attempts: int = 10):
        """Runs `fn`; a reader retries when a step vanishes while it lists the steps.

        orbax lists the step directories and then reads each one's metadata; a training run
        writing into the same directory may delete an old step in between (keep-K), which
        surfaces as `FileNotFoundError`. Listing again sees a consistent set.
        """
        for attempt in range(attempts):
            try:
                return fn()
            except FileNotFoundError:
                if not self.read_only or attempt == attempts - 1:
                    raise
                time.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")

    def latest_step(self) -> int | None:
        """The step of the newest complete checkpoint, or None."""
        return self._retry(self._manager.latest_step)

    def all_steps(self) -> list[int]:
        """Steps of all complete checkpoints, ascending."""
        return sorted(self._retry(self._manager.all_steps))

    def save(self, step: int, state: Any, data_iterator: Any) -> None:
        """Writes checkpoint `step` (asynchronously when enabled). Every process must call it."""
        if step in self._manager.all_steps():
            return
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=grain.checkpoint.CheckpointSave(data_iterator),
            ),
            force=True,
        )

    def restore(self, step: int, abstract_state: Any, data_iterator: Any = None) -> Any:
        """Restores `step` into arrays laid out like `abstract_state` (shapes + shardings).

        The data iterator, when given, is restored in place (eval and sample pass none). The
        target shardings come from the current mesh, so a checkpoint written on a different
        number of devices restores onto this one.
        """
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        restored = self._manager.restore(step, args=ocp.args.Composite(**items))
        return restored["state"]

    def reload(self) -> None:
        """Re-reads the list of steps from disk (a live training may have added or removed some)."""
        self._retry(self._manager.reload)

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are finished."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Finishes pending saves and releases resources."""
        self._manager.wait_until_finished()
        self._manager.close()


def abstract_like(tree: Any, shardings: Any) -> Any:
    """`ShapeDtypeStruct`s of `tree` (arrays or abstract arrays) carrying `shardings`."""
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings
    )
