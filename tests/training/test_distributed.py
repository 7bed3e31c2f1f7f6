"""Multi-process start-up arguments and the local launcher's failure handling."""

import os
import subprocess
import sys

import pytest

from diffax.training import distributed

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_single_process_needs_no_initialisation(monkeypatch):
    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    monkeypatch.delenv("TPU_WORKER_HOSTNAMES", raising=False)
    assert distributed.initialize() is False
    assert distributed.initialize("127.0.0.1:1234", 1, 0) is False


@pytest.mark.parametrize(
    "args,match",
    [
        (("127.0.0.1:1234", None, 0), "must be given together"),
        (("127.0.0.1:1234", 2, 2), r"process_id=2 must lie in \[0, 2\)"),
    ],
)
def test_bad_coordinator_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        distributed.initialize(*args)


def test_cluster_detection(monkeypatch):
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.setenv("SLURM_PROCID", "1")
    assert distributed.cluster_detected()
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "w0,w1")
    assert distributed.cluster_detected()


@pytest.mark.slow
def test_launcher_propagates_a_failing_process(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "launch/local.py",
            "--num_processes=2",
            "--",
            f"--workdir={tmp_path}",
            "--config.data.source=text_file",
            f"--config.data.path={tmp_path / 'missing.txt'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert "[p0] error: data.path=" in result.stdout and "no such file" in result.stdout
