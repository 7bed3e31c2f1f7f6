"""A live training run is safe from eval/sample on its workdir and from a second training."""

import os
import subprocess
import time

import pytest

from diffax import training
from diffax.training.workdir import LOCK_NAME
from tests.training.helpers import cli_command, start_training, tiny_config, train_losses

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _config():
    # A checkpoint at every step, few kept: a save (and a deletion) is in flight at almost any
    # moment, which is when a reader that cleans temporary directories destroys the trainer's.
    return tiny_config(
        **{
            "train.num_steps": 24,
            "train.log_every": 1,
            "checkpoint.every_steps": 1,
            "checkpoint.keep": 2,
        }
    )


def _has_checkpoint(workdir):
    ckpt = os.path.join(workdir, "checkpoints")
    return os.path.isdir(ckpt) and any(d.isdigit() for d in os.listdir(ckpt))


@pytest.mark.slow
def test_eval_and_sample_during_training_do_not_disturb_it(tmp_path):
    workdir, undisturbed = str(tmp_path / "live"), str(tmp_path / "undisturbed")
    config = _config()
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    proc = start_training(config, workdir)
    try:
        deadline = time.time() + 300
        while not _has_checkpoint(workdir):
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            assert time.time() < deadline, "no checkpoint in time"
            time.sleep(0.05)
        # A second training on the live workdir is refused, naming the holder.
        second = subprocess.run(
            cli_command(config, workdir), cwd=ROOT, env=env, capture_output=True, text=True
        )
        if proc.poll() is None:
            assert second.returncode == 1, second.stderr[-3000:]
            assert "is locked by a training run" in second.stderr
            assert f"pid {proc.pid}" in second.stderr
            assert "Traceback" not in second.stderr
        readers = 0
        while proc.poll() is None:
            training.evaluate(config, workdir)
            training.sample(config, workdir)
            readers += 1
        out = proc.communicate(timeout=300)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-3000:]
    assert readers >= 1, "the readers never overlapped the training run"
    assert not os.path.exists(os.path.join(workdir, LOCK_NAME))  # released on exit
    training.train(config, undisturbed)
    live, reference = train_losses(workdir), train_losses(undisturbed)
    assert sorted(live) == list(range(1, 25))
    for step in range(1, 25):
        assert live[step] == pytest.approx(reference[step], rel=1e-5), step
