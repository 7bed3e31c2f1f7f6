"""Run directories: the config a workdir was started with, and refusing to mix runs.

`workdir/config.json` records the config of the run that owns the workdir. Restarting in the same
workdir resumes only when every key that shapes the model, the data or the objective is unchanged;
keys that may differ between restarts (how long to train, how often to log, evaluate, sample or
checkpoint, the mesh) are listed in `RESUMABLE_PREFIXES`.

Workdirs are `etils.epath.Path`s end to end: a URL such as `gs://bucket/run` stays a URL (every
file of the run, orbax checkpoints included, is written through the matching file system), a
local path is made absolute. The training lock (`WorkdirLock`) needs `flock` and a process table,
so it exists for local workdirs only; a URL workdir is not locked (a log line says so), and
keeping one training per bucket path is up to the user or the scheduler.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from typing import Any

from absl import logging
from etils import epath

PathLike = str | os.PathLike


def is_url(workdir: PathLike) -> bool:
    """True for a URL workdir (`gs://...`, `s3://...`): not a path on this machine."""
    return "://" in os.fspath(workdir)


def workdir_path(workdir: PathLike) -> epath.Path:
    """`workdir` as an `epath.Path`: URLs unchanged, local paths absolute (with `~` expanded).

    Args:
      workdir: a local path or a URL such as `gs://bucket/run`.

    Returns:
      The path; `str()` of it is the URL itself for a URL workdir.
    """
    text = os.fspath(workdir)
    if not text:
        raise ValueError("--workdir is empty; pass a directory or a URL such as gs://bucket/run")
    if is_url(text):
        return epath.Path(text)
    return epath.Path(os.path.abspath(os.path.expanduser(text)))


RESUMABLE_PREFIXES = (
    "train.num_steps",
    "train.log_every",
    "train.progress_bar",
    "train.dead_run_window",
    "train.max_skipped_fraction",
    "checkpoint.",
    "eval.",
    "sample.",
    "mesh.",
    "distributed.",
    "data.data_dir",  # the same TFDS data may live elsewhere on another machine
    "data.num_workers",
)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _normalise(v: Any) -> Any:
    return json.loads(json.dumps(v))


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Keys (outside `RESUMABLE_PREFIXES`) whose values differ, as "key: saved -> current"."""
    a, b = flatten(_normalise(saved)), flatten(_normalise(current))
    diffs = []
    for key in sorted(set(a) | set(b)):
        if key.startswith(RESUMABLE_PREFIXES):
            continue
        if a.get(key, "<absent>") != b.get(key, "<absent>"):
            diffs.append(f"{key}: {a.get(key, '<absent>')!r} -> {b.get(key, '<absent>')!r}")
    return diffs


def prepare_workdir(workdir: PathLike, config: dict[str, Any], *, write: bool = True) -> bool:
    """Checks that `workdir` is empty or belongs to a run of the same config; records the config.

    Args:
      workdir: the run directory (a local path or a URL).
      config: the run's config as a plain dict.
      write: write `config.json` when it is missing (only the primary process should).

    Returns:
      True when the workdir already held this run (a resume), False for a new run. A workdir
      whose `config.json` differs but that holds no complete checkpoint (an earlier start failed
      before saving anything) counts as new: its `config.json` is replaced.

    Raises:
      ValueError: the workdir holds a run of a different config, or checkpoints without a
        `config.json` (a foreign directory). Nothing is written in that case.
    """
    wd = workdir_path(workdir)
    path, ckpt_dir = wd / "config.json", wd / "checkpoints"
    if path.exists():
        try:
            saved = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"workdir {str(wd)!r}: config.json is unreadable ({e})") from None
        diffs = config_differences(saved, config)
        if diffs and not has_checkpoint(ckpt_dir):
            # An earlier start that saved no checkpoint left nothing to resume or mix with.
            if write:
                _write_config(path, config)
            return False
        if diffs:
            hint = ""
            if any("'<absent>' ->" in d for d in diffs):
                hint = (
                    "\n(keys shown as '<absent>' did not exist when this run was started: it was "
                    "written by an earlier diffax version, whose model layout may differ)"
                )
            raise ValueError(
                f"workdir {str(wd)!r} holds a run with a different config; refusing to resume or "
                "overwrite it. Use a new --workdir, or restore these keys:\n  "
                + "\n  ".join(diffs)
                + hint
            )
        return True
    if ckpt_dir.is_dir() and any(True for _ in ckpt_dir.iterdir()):
        raise ValueError(
            f"workdir {str(wd)!r} has a checkpoints/ directory but no config.json: it was not "
            "written by diffax (or is corrupt); refusing to use it. Use a new --workdir."
        )
    if write:
        wd.mkdir(parents=True, exist_ok=True)
        _write_config(path, config)
    return False


def _write_config(path: epath.Path, config: dict[str, Any]) -> None:
    text = json.dumps(_normalise(config), indent=2, sort_keys=True)
    if is_url(path):  # object stores write whole objects: no partial file to guard against
        path.write_text(text)
        return
    tmp = path.parent / (path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def has_checkpoint(ckpt_dir: PathLike) -> bool:
    """True when `ckpt_dir` holds a complete checkpoint (a step directory named by its number).

    orbax writes into `<step>.orbax-checkpoint-tmp-*` and renames to `<step>` when complete.
    """
    d = epath.Path(ckpt_dir)
    return d.is_dir() and any(p.name.isdigit() for p in d.iterdir())


# --------------------------------------------------------------------------------------------
# Locking: one training per workdir.

LOCK_NAME = "train.lock"


class WorkdirLocked(RuntimeError):
    """Another live training holds the workdir's lock."""


def _proc_start_ticks(pid: int) -> int | None:
    """Start time of process `pid` in clock ticks since boot (Linux), to tell a reused PID."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            # The command name (field 2) may hold spaces; fields after its ")" are fixed.
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _process_alive(pid: int, start_ticks: int | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    now = _proc_start_ticks(pid)
    return start_ticks is None or now is None or now == start_ticks


class WorkdirLock:
    """An exclusive lock on a workdir, held by `train` for the whole run.

    The lock is the file `workdir/train.lock`, holding the holder's host, PID and start time,
    with an `fcntl.flock` on it for as long as the holder lives. A second training on the same
    workdir is refused with a `WorkdirLocked` error that names the holder. A lock left behind by a
    killed run (its flock is gone with the process) is taken over when it names this host and a
    dead process (PID and process start time, so a reused PID is not mistaken for the holder).
    A lock naming another host cannot be checked from here and is refused, with the command to
    remove it if that run is known to be dead. `release` (or leaving the `with` block) removes it.

    A URL workdir (`gs://...`) is not locked: object stores have no `flock`, and a lock object
    whose holder cannot be checked for liveness would block every restart after a preemption.
    `acquire` then only logs that the workdir is unlocked.

    Args:
      workdir: the run directory.
    """

    def __init__(self, workdir: PathLike):
        self.url = is_url(workdir)
        self.path = os.path.join(os.fspath(workdir_path(workdir)), LOCK_NAME)
        self._fd: int | None = None

    def _holder(self, fd: int) -> dict[str, Any] | None:
        os.lseek(fd, 0, os.SEEK_SET)
        try:
            return json.loads(os.read(fd, 4096).decode() or "null")
        except (ValueError, UnicodeDecodeError):
            return None

    def _refuse(self, holder: dict[str, Any] | None, why: str) -> None:
        who = (
            f"pid {holder.get('pid')} on host {holder.get('host')!r}, started "
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(holder.get('time', 0)))}"
            if holder
            else "an unknown process"
        )
        raise WorkdirLocked(
            f"workdir {os.path.dirname(self.path)!r} is locked by a training run ({who}){why}; "
            "refusing to start a second one on it. Wait for it to finish or use another "
            f"--workdir (if that run is dead, remove {self.path})."
        )

    def acquire(self) -> None:
        """Takes the lock or raises `WorkdirLocked` (a URL workdir: logs that it is unlocked)."""
        if self.url:
            logging.warning(
                "workdir %s is a URL: it is not locked against a second training run",
                os.path.dirname(self.path),
            )
            return
        host = socket.gethostname()
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._holder(fd)
                os.close(fd)
                self._refuse(holder, "")
            # The file may have been released (unlinked) between our open and our flock.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            holder = self._holder(fd)
            if holder and holder.get("host") != host:
                os.close(fd)
                self._refuse(holder, " on another host (its liveness cannot be checked here)")
            if holder and _process_alive(int(holder.get("pid", -1)), holder.get("start_ticks")):
                if holder.get("pid") != os.getpid():
                    os.close(fd)
                    self._refuse(holder, "")
            mine = {
                "host": host,
                "pid": os.getpid(),
                "start_ticks": _proc_start_ticks(os.getpid()),
                "time": time.time(),
            }
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, json.dumps(mine).encode())
            os.fsync(fd)
            self._fd = fd
            return

    def release(self) -> None:
        """Removes the lock file and drops the lock (idempotent)."""
        if self._fd is None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> WorkdirLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


# --------------------------------------------------------------------------------------------
# Pre-flight checks on the workdir path, before anything is written.


def check_workdir(workdir: PathLike, *, for_training: bool) -> None:
    """Raises `ValueError` unless `workdir` can serve as a run directory.

    It must not be a file; for training a local workdir (or, when missing, its nearest existing
    parent) must be a directory this process can create files in, tested by creating and removing
    a probe file (root ignores permission bits, so `os.access` alone would not tell). Nothing is
    left behind. A URL workdir is only checked not to be a file: its permissions are the object
    store's, and the first write reports them.

    Args:
      workdir: the run directory (a local path or a URL).
      for_training: also check that it can be written.
    """
    wd = workdir_path(workdir)
    name = os.fspath(workdir)
    if wd.exists() and not wd.is_dir():
        raise ValueError(f"--workdir={name!r} is a file, not a directory; pass a directory")
    if not for_training or is_url(wd):
        return
    workdir = os.fspath(wd)
    probe_dir = workdir
    while not os.path.exists(probe_dir):
        parent = os.path.dirname(probe_dir)
        if parent == probe_dir:
            break
        probe_dir = parent
    if not os.path.isdir(probe_dir):
        raise ValueError(
            f"--workdir={name!r} cannot be created: {probe_dir!r} is a file, not a directory"
        )
    # Host and PID: processes of a multi-host run may probe the same shared directory at once.
    probe = os.path.join(probe_dir, f".diffax_write_probe_{socket.gethostname()}_{os.getpid()}")
    try:
        with open(probe, "w") as f:
            f.write("probe")
        os.remove(probe)
    except OSError as e:
        raise ValueError(
            f"--workdir={name!r} is not writable ({e.strerror} in {probe_dir!r}); pass a "
            "directory you can write to"
        ) from None


def snapshot_entries(workdir: PathLike) -> set[str] | None:
    """Names directly inside `workdir` (None when it does not exist), for `remove_new_entries`."""
    wd = workdir_path(workdir)
    return {p.name for p in wd.iterdir()} if wd.is_dir() else None


def remove_new_entries(workdir: PathLike, before: set[str] | None) -> None:
    """Removes what a failed start created in `workdir` (entries not in `before`).

    When the workdir did not exist before, it is removed too if nothing else is left in it.
    """
    wd = workdir_path(workdir)
    if not wd.is_dir():
        return
    for path in list(wd.iterdir()):
        if path.name in (before or set()):
            continue
        try:
            if path.is_dir() and not os.path.islink(path):
                path.rmtree(missing_ok=True)
            else:
                path.unlink(missing_ok=True)
        except OSError:
            pass
    if before is None:
        try:
            if not any(True for _ in wd.iterdir()):
                wd.rmdir()
        except OSError:
            pass
