"""Workdir guard: the training lock, stale-lock takeover, pre-flight checks, failed starts."""

import json
import os
import socket
import subprocess
import sys

import pytest
from etils import epath
from etils.epath import backend as epath_backend
from etils.epath import gpath

from diffax.training.workdir import (
    LOCK_NAME,
    WorkdirLock,
    WorkdirLocked,
    check_workdir,
    prepare_workdir,
    remove_new_entries,
    snapshot_entries,
    workdir_path,
)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_lock_is_exclusive_and_released(tmp_path):
    with WorkdirLock(str(tmp_path)):
        holder = json.loads((tmp_path / LOCK_NAME).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(WorkdirLocked, match=f"pid {os.getpid()} on host"):
            WorkdirLock(str(tmp_path)).acquire()
    assert not (tmp_path / LOCK_NAME).exists()
    with WorkdirLock(str(tmp_path)):  # free again
        pass


def test_lock_held_by_another_live_process_is_refused(tmp_path):
    code = (
        "import sys, time; sys.path.insert(0, sys.argv[2]);"
        "from diffax.training.workdir import WorkdirLock;"
        "l = WorkdirLock(sys.argv[1]); l.acquire(); print('locked', flush=True); time.sleep(60)"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path), root], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(WorkdirLocked, match=f"pid {proc.pid} on host"):
            WorkdirLock(str(tmp_path)).acquire()
    finally:
        proc.kill()
        proc.wait()
    # Killed without releasing: the lock file stays, names a dead process, and is taken over.
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == proc.pid
    with WorkdirLock(str(tmp_path)):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()


def test_stale_lock_of_dead_process_is_taken_over(tmp_path):
    stale = {"host": socket.gethostname(), "pid": _dead_pid(), "start_ticks": 1, "time": 0}
    (tmp_path / LOCK_NAME).write_text(json.dumps(stale))
    with WorkdirLock(str(tmp_path)):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()


def test_reused_pid_is_not_mistaken_for_the_holder(tmp_path):
    # Our own PID, but a different process start time: the holder died and its PID was reused.
    stale = {"host": socket.gethostname(), "pid": os.getppid(), "start_ticks": -5, "time": 0}
    (tmp_path / LOCK_NAME).write_text(json.dumps(stale))
    with WorkdirLock(str(tmp_path)):
        pass


def test_lock_from_another_host_is_refused(tmp_path):
    other = {"host": "some-other-host", "pid": 1, "start_ticks": None, "time": 0}
    (tmp_path / LOCK_NAME).write_text(json.dumps(other))
    with pytest.raises(WorkdirLocked, match="another host.*remove"):
        WorkdirLock(str(tmp_path)).acquire()
    assert json.loads((tmp_path / LOCK_NAME).read_text()) == other  # left untouched


def test_check_workdir(tmp_path):
    check_workdir(str(tmp_path / "new" / "deeper"), for_training=True)
    assert not (tmp_path / "new").exists()  # nothing created by the check
    assert os.listdir(tmp_path) == []  # the write probe is removed
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        check_workdir(str(tmp_path / "file"), for_training=False)
    with pytest.raises(ValueError, match="is a file"):
        check_workdir(str(tmp_path / "file" / "run"), for_training=True)


def test_config_of_a_start_without_checkpoint_is_replaced(tmp_path):
    workdir = str(tmp_path)
    assert prepare_workdir(workdir, {"a": 1}) is False
    # A start that failed before its first checkpoint: a corrected config is accepted.
    assert prepare_workdir(workdir, {"a": 2}) is False
    assert json.loads((tmp_path / "config.json").read_text()) == {"a": 2}
    # Once a complete checkpoint exists, a different config is refused.
    os.makedirs(tmp_path / "checkpoints" / "5")
    with pytest.raises(ValueError, match="a: 2 -> 3"):
        prepare_workdir(workdir, {"a": 3})
    assert prepare_workdir(workdir, {"a": 2}) is True


def test_remove_new_entries(tmp_path):
    (tmp_path / "kept.txt").write_text("x")
    before = snapshot_entries(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    os.makedirs(tmp_path / "checkpoints" / "tmp")
    remove_new_entries(str(tmp_path), before)
    assert os.listdir(tmp_path) == ["kept.txt"]
    missing = tmp_path / "was_missing"
    before = snapshot_entries(str(missing))
    os.makedirs(missing / "tb")
    remove_new_entries(str(missing), before)
    assert not missing.exists()


# --------------------------------------------------------------------------------------------
# URL workdirs (gs://...): a fake bucket stands in for Cloud Storage.


class _FakeBucket(epath_backend._OsPathBackend):
    """epath backend for gs:// that stores `gs://b/x` under `root/b/x` on the local disk."""

    def __init__(self, root):
        self.root = str(root)

    def _local(self, path):
        text = os.fspath(path)
        assert text.startswith("gs://"), text
        return os.path.join(self.root, text[len("gs://") :])

    def open(self, path, mode):
        return super().open(self._local(path), mode)

    def exists(self, path):
        return super().exists(self._local(path))

    def isdir(self, path):
        return super().isdir(self._local(path))

    def listdir(self, path):
        return super().listdir(self._local(path))

    def makedirs(self, path, *, exist_ok=False, mode=None):
        return super().makedirs(self._local(path), exist_ok=exist_ok)

    def mkdir(self, path, *, exist_ok=False, mode=None):
        return super().mkdir(self._local(path), exist_ok=exist_ok)

    def rmtree(self, path):
        return super().rmtree(self._local(path))

    def remove(self, path):
        return super().remove(self._local(path))

    def replace(self, path, dst):
        return super().replace(self._local(path), self._local(dst))

    def rename(self, path, dst):
        return super().rename(self._local(path), self._local(dst))

    def stat(self, path):
        return super().stat(self._local(path))


class _RecordingManager:
    """Stands in for `ocp.CheckpointManager` (orbax would write through tensorstore's GCS)."""

    directories = []

    def __init__(self, directory, options=None, item_handlers=None):
        self.directories.append(directory)
        self.steps = []

    def latest_step(self):
        return max(self.steps, default=None)

    def all_steps(self):
        return list(self.steps)

    def save(self, step, args=None, force=False):
        self.steps.append(step)

    def reached_preemption(self, step):
        return False

    def reload(self):
        pass

    def wait_until_finished(self):
        pass

    def close(self):
        pass


def test_workdir_path_keeps_urls_and_makes_local_paths_absolute(tmp_path, monkeypatch):
    assert str(workdir_path("gs://bucket/run")) == "gs://bucket/run"
    assert isinstance(workdir_path("gs://bucket/run"), epath.Path)
    assert str(workdir_path("s3://b/x/y")) == "s3://b/x/y"
    monkeypatch.chdir(tmp_path)
    assert str(workdir_path("run")) == str(tmp_path / "run")
    with pytest.raises(ValueError, match="--workdir is empty"):
        workdir_path("")


def test_url_workdir_is_not_locked(tmp_path):
    lock = WorkdirLock("gs://bucket/run")
    lock.acquire()  # no flock on an object store: nothing is created
    lock.release()
    assert not os.path.exists("gs:")


@pytest.mark.slow
def test_gs_workdir_reaches_orbax_and_every_writer_unchanged(tmp_path, monkeypatch):
    import orbax.checkpoint as ocp
    from tensorboardX import record_writer

    from diffax import training
    from tests.training.helpers import tiny_config

    bucket = tmp_path / "bucket_root"
    monkeypatch.setitem(gpath._PREFIX_TO_BACKEND, "gs", _FakeBucket(bucket))
    monkeypatch.setattr(
        record_writer, "REGISTERED_FACTORIES", dict(record_writer.REGISTERED_FACTORIES)
    )
    monkeypatch.setattr(_RecordingManager, "directories", [])
    monkeypatch.setattr(ocp, "CheckpointManager", _RecordingManager)
    monkeypatch.chdir(tmp_path)  # a URL turned into a local path would appear here as gs:/...

    training.train(tiny_config(**{"train.num_steps": 3}), "gs://bucket/run")

    assert [str(d) for d in _RecordingManager.directories] == ["gs://bucket/run/checkpoints"]
    assert all(isinstance(d, epath.Path) for d in _RecordingManager.directories)
    run = bucket / "bucket" / "run"
    assert json.loads((run / "config.json").read_text())["train"]["num_steps"] == 3
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {r["split"] for r in records} == {"train", "eval"}
    assert os.listdir(run / "tb")[0].startswith("events.out.tfevents")
    assert os.listdir(run / "samples") == ["samples_00000003.txt"]
    assert sorted(os.listdir(tmp_path)) == ["bucket_root"]  # nothing written locally
