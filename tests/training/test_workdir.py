"""Workdir guard: the training lock, stale-lock takeover, pre-flight checks, failed starts."""

import json
import os
import socket
import subprocess
import sys

import pytest

from diffax.training.workdir import (
    LOCK_NAME,
    WorkdirLock,
    WorkdirLocked,
    check_workdir,
    prepare_workdir,
    remove_new_entries,
    snapshot_entries,
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
