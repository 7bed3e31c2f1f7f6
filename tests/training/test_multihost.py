"""Multi-host preemption: SIGTERM to one of two processes stops both at the same step.

The processes run `experiments.main` with `jax.distributed` on 127.0.0.1 (gloo collectives on
CPU), as `launch/local.py` starts them, but the test holds each process so that it can signal
one of them only.
"""

import json
import os
import signal
import subprocess
import time

import pytest

from diffax import training
from diffax.training import preemption
from launch.local import free_port
from tests.training.helpers import cli_command, tiny_config, train_losses

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NUM_STEPS = 30


def _config(**overrides):
    return tiny_config(
        **{
            "train.num_steps": NUM_STEPS,
            "train.log_every": 1,
            "checkpoint.every_steps": 1000,  # only the preemption and the final checkpoint
            **overrides,
        }
    )


def _start(config, workdir, num_processes=2):
    address = f"127.0.0.1:{free_port()}"
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        PYTHONUNBUFFERED="1",
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
    )
    procs = []
    for i in range(num_processes):
        cmd = cli_command(config, workdir) + [
            f"--coordinator_address={address}",
            f"--num_processes={num_processes}",
            f"--process_id={i}",
        ]
        procs.append(
            subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        )
    return procs


def _finish(procs, timeout=400):
    outs = [p.communicate(timeout=timeout)[0] for p in procs]
    for i, (p, out) in enumerate(zip(procs, outs, strict=True)):
        assert p.returncode == 0, f"process {i} exited {p.returncode}:\n{out[-3000:]}"
    return outs


def _wait_for_step(workdir, step, procs, timeout=400):
    deadline = time.time() + timeout
    metrics = os.path.join(workdir, "metrics.jsonl")
    while time.time() < deadline:
        if os.path.exists(metrics) and max(train_losses(workdir), default=0) >= step:
            return
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(f"a process exited early:\n{p.stdout.read()[-3000:]}")
        time.sleep(0.05)
    raise AssertionError("training did not reach the step in time")


def _iterator_positions(step_dir):
    """{file name: grain iterator state} of each process in a checkpoint's `data` item."""
    data = os.path.join(step_dir, "data")
    out = {}
    for name in sorted(os.listdir(data)):
        if "process" in name:
            with open(os.path.join(data, name)) as f:
                out[name] = json.load(f)
    return out


@pytest.mark.slow
def test_sigterm_to_one_process_stops_all_at_the_same_step(tmp_path):
    reference = str(tmp_path / "reference")
    training.train(_config(), reference)
    want = train_losses(reference)

    workdir = str(tmp_path / "run")
    procs = _start(_config(), workdir)
    _wait_for_step(workdir, 2, procs)
    procs[1].send_signal(signal.SIGTERM)  # the non-primary process only
    outs = _finish(procs)
    stopped = int(outs[0].split("checkpointing step ")[1].split()[0])
    assert 2 < stopped < NUM_STEPS, outs[0][-2000:]
    steps = sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())
    assert steps == [stopped]
    # Both processes wrote their data-iterator state at that step, at the same position.
    positions = _iterator_positions(os.path.join(workdir, "checkpoints", str(stopped)))
    assert len(positions) == 2, positions
    assert len({json.dumps(v, sort_keys=True) for v in positions.values()}) == 1, positions
    assert max(train_losses(workdir)) == stopped

    outs = _finish(_start(_config(), workdir))
    assert f"resumed from checkpoint at step {stopped}" in outs[0]
    got = train_losses(workdir)
    assert sorted(got) == list(range(1, NUM_STEPS + 1))
    for step in range(1, NUM_STEPS + 1):
        assert got[step] == pytest.approx(want[step], rel=1e-5), step


def test_synchronized_stop_signal_leaves_sigterm_to_jax(monkeypatch):
    sent = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: sent.append((pid, sig)))
    before = signal.getsignal(signal.SIGTERM)
    with preemption.StopSignal(synchronized=True) as stop:
        assert signal.getsignal(signal.SIGTERM) is before  # the C++ notifier's handler stays
        signal.getsignal(signal.SIGINT)(signal.SIGINT, None)
        assert sent == [(os.getpid(), signal.SIGTERM)]  # SIGINT becomes a preemption notice
        assert stop.received is None
    assert signal.getsignal(signal.SIGTERM) is before


def test_single_process_stop_signal_records_the_signal():
    assert not preemption.preemption_sync_enabled()
    with preemption.StopSignal() as stop:
        assert not stop.synchronized
        signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)
        assert stop.received == signal.SIGTERM
