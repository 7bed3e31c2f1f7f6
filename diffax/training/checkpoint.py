"""Checkpoints with orbax `CheckpointManager`: train state and data-iterator position.

Each checkpoint is a step directory holding two items (`args.Composite`): `state` (the train
state pytree, whose `step` is the step) and `data` (the grain iterator state, one file per
process). Checkpoints of earlier versions also hold a `meta` item, which nothing reads. orbax
writes into a temporary directory and renames it when complete, so a save killed half-way is never
listed as a step and `latest_step()` is always a complete checkpoint.

The directory is an `etils.epath.Path`: a URL (`gs://bucket/run/checkpoints`) reaches orbax
unchanged. Before a restore the stored tree (orbax metadata: paths and shapes) is compared with
the expected one, so a checkpoint of another model layout is refused with the differing
parameters named instead of a tensorstore error.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from absl import logging
from etils import epath


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
        directory: str | os.PathLike,
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
        text = os.fspath(directory)
        self.directory = epath.Path(text if "://" in text else os.path.abspath(text))
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

    def reached_preemption(self, step: int) -> bool:
        """True when every process has agreed to stop and checkpoint at `step` (multi-host).

        orbax's `CheckpointManager.reached_preemption`, i.e. JAX's preemption sync point: when
        any process receives SIGTERM, the coordination service picks a step every process
        reaches; each process must call this after every step with the same step numbers.
        Always False in a single-process run (no distributed runtime).
        """
        return bool(self._manager.reached_preemption(step))

    def stored_shapes(self, step: int) -> dict[str, tuple[int, ...]] | None:
        """{"params/blocks/0/..": shape} of the `state` item of checkpoint `step` (orbax metadata).

        None when the metadata cannot be read (then `restore` reports whatever orbax raises).
        """
        try:
            meta = self._manager.item_metadata(step)
            tree = meta["state"] if "state" in meta else None
        except Exception:  # metadata of a corrupt or foreign step: restore reports it
            return None
        if tree is None:
            return None
        flat = jax.tree_util.tree_flatten_with_path(
            tree, is_leaf=lambda x: hasattr(x, "shape") and not isinstance(x, dict)
        )[0]
        return {_path_name(path): tuple(getattr(x, "shape", ()) or ()) for path, x in flat}

    def check_structure(self, step: int, abstract_state: Any) -> None:
        """Raises ValueError when checkpoint `step` does not hold the tree of `abstract_state`.

        Compares parameter paths and shapes (from orbax metadata, nothing is read) and names the
        first differences and what to do (a layout written before scanned layers and the
        128-wide adaLN condition: `model.scan_layers=False` / `model.cond_dim`, or a new workdir).
        """
        stored = self.stored_shapes(step)
        if stored is None:
            return
        flat = jax.tree_util.tree_flatten_with_path(abstract_state)[0]
        expected = {_path_name(path): tuple(x.shape) for path, x in flat}
        diffs = structure_differences(stored, expected)
        if diffs:
            raise ValueError(
                f"the checkpoint at step {step} in {self.directory} does not match the model "
                "of this config: "
                + "; ".join(diffs[:6])
                + (f"; ... ({len(diffs)} differences)" if len(diffs) > 6 else "")
                + ". "
                + _layout_hint(stored, expected)
            )

    def restore(
        self, step: int, abstract_state: Any, data_iterator: Any = None, *, check: bool = True
    ) -> Any:
        """Restores `step` into arrays laid out like `abstract_state` (shapes + shardings).

        The data iterator, when given, is restored in place (eval and sample pass none). The
        target shardings come from the current mesh, so a checkpoint written on a different
        number of devices restores onto this one. `check`: first compare the stored tree with
        `abstract_state` (`check_structure`).

        Raises:
          ValueError: the stored tree differs from `abstract_state`.
        """
        if check:
            self.check_structure(step, abstract_state)
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


def _path_name(path) -> str:
    parts = []
    for k in path:
        key = getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))
        parts.append(str(key))
    return "/".join(parts)


def structure_differences(
    stored: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]]
) -> list[str]:
    """Human-readable differences between two {path: shape} trees, sorted by path.

    Args:
      stored: paths and shapes found in a checkpoint.
      expected: paths and shapes the current config builds.

    Returns:
      Lines "path: only in the checkpoint [shape]", "path: missing from the checkpoint
      (expected [shape])" and "path: shape [a] in the checkpoint, [b] expected".
    """
    out = []
    for key in sorted(set(stored) | set(expected)):
        if key not in expected:
            out.append(f"{key}: only in the checkpoint {list(stored[key])}")
        elif key not in stored:
            out.append(f"{key}: missing from the checkpoint (expected {list(expected[key])})")
        elif stored[key] != expected[key]:
            out.append(
                f"{key}: shape {list(stored[key])} in the checkpoint, {list(expected[key])} "
                "expected"
            )
    return out


def _layout_hint(stored: dict, expected: dict) -> str:
    """What to do about a layout difference, guessed from the parameter paths."""
    layer = re.compile(r"/\d+(/|$)")
    unrolled = any(layer.search(k) for k in stored if k.startswith("params/"))
    scanned = any(layer.search(k) for k in expected if k.startswith("params/"))
    if unrolled and not scanned:
        what = (
            "It was written with one parameter tree per layer (blocks/0/...), the layout before "
            "scanned layers: resume it with model.scan_layers=False (and model.cond_dim equal "
            "to model.dim if its adaLN shapes differ), or start a new --workdir."
        )
    elif scanned and not unrolled:
        what = (
            "It was written with stacked (scanned) layers: resume it with "
            "model.scan_layers=True, or start a new --workdir."
        )
    else:
        what = (
            "It was written by another model config or an earlier diffax version (e.g. an adaLN "
            "condition of width model.dim: set model.cond_dim to it), or start a new --workdir."
        )
    return what


def abstract_like(tree: Any, shardings: Any) -> Any:
    """`ShapeDtypeStruct`s of `tree` (arrays or abstract arrays) carrying `shardings`."""
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings
    )
