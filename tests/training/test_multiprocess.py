"""Two local processes (gloo collectives on CPU), started by launch/local.py, train like one."""

import json
import os
import subprocess
import sys

import pytest

from configs import base
from diffax import training
from diffax.training.workdir import flatten
from tests.training.helpers import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _overrides(config):
    """Command-line `--config.k=v` flags that turn the base config into `config`."""
    default, wanted = flatten(base.get_config().to_dict()), flatten(config.to_dict())
    return [f"--config.{k}={v}" for k, v in wanted.items() if default[k] != v]


def _losses(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return {r["step"]: r["loss"] for r in rows if r["split"] == "train"}


def _launch(workdir, config, num_processes=2):
    cmd = [
        sys.executable,
        "launch/local.py",
        f"--num_processes={num_processes}",
        "--cpu_devices_per_process=2",
        "--",
        "--config=configs/quickstart.py",
        f"--workdir={workdir}",
        *_overrides(config),
    ]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    reference = str(tmp_path / "one")
    training.train(tiny_config(), reference)

    two = str(tmp_path / "two")
    first = _launch(two, tiny_config(**{"train.num_steps": 3}))
    assert first.returncode == 0, first.stdout[-3000:]
    assert "processes=2" in first.stdout
    second = _launch(two, tiny_config())  # resumes from the 2-process checkpoint at step 3
    assert second.returncode == 0, second.stdout[-3000:]
    assert "resumed from checkpoint at step 3" in second.stdout
    assert sorted(os.listdir(os.path.join(two, "checkpoints"))) == ["3", "6"]
    # grain wrote one iterator state per process
    data_files = os.listdir(os.path.join(two, "checkpoints", "6", "data"))
    assert len([f for f in data_files if "process" in f]) == 2, data_files

    ref, got = _losses(reference), _losses(two)
    assert set(got) == {3, 6}
    for step in (3, 6):
        assert got[step] == pytest.approx(ref[step], rel=1e-5)


def test_gpu_xla_flags_parse():
    """The GPU flags of launch/xla_env.sh exist in this jaxlib (XLA aborts on unknown ones)."""
    script = "source launch/xla_env.sh gpu && python -c 'import jax; jax.numpy.zeros(1)'"
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS="",
        PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
    )
    result = subprocess.run(
        ["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env
    )
    assert result.returncode == 0, result.stderr[-2000:]
    flags = subprocess.run(
        ["bash", "-c", "source launch/xla_env.sh gpu && echo $XLA_FLAGS"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
    ).stdout.split()
    assert "--xla_gpu_enable_latency_hiding_scheduler=true" in flags and len(flags) >= 10
