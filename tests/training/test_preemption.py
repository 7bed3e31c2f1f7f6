"""Preemption and crashes: SIGTERM checkpoints and stops; SIGKILL never corrupts "latest"."""

import os
import signal
import subprocess
import time

import pytest

from diffax import training
from tests.training.helpers import cli_command, start_training, tiny_config, train_losses

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NUM_STEPS = 12


def _config(**overrides):
    return tiny_config(
        **{
            "train.num_steps": NUM_STEPS,
            "train.log_every": 1,
            "checkpoint.every_steps": 4,
            **overrides,
        }
    )


def _wait_for_step(workdir, step, proc, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (
            os.path.exists(os.path.join(workdir, "metrics.jsonl"))
            and max(train_losses(workdir), default=0) >= step
        ):
            return
        if proc.poll() is not None:
            raise AssertionError(f"training exited early:\n{proc.stdout.read()[-3000:]}")
        time.sleep(0.05)
    raise AssertionError("training did not reach the step in time")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("reference"))
    training.train(_config(), workdir)
    return train_losses(workdir)


@pytest.mark.slow
def test_sigterm_checkpoints_and_resume_matches(tmp_path, reference):
    workdir = str(tmp_path / "run")
    proc = start_training(_config(), workdir)
    _wait_for_step(workdir, 5, proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    stopped = int(out.split("checkpointing step ")[1].split()[0])
    assert 5 <= stopped < NUM_STEPS
    assert str(stopped) in os.listdir(os.path.join(workdir, "checkpoints"))
    # Restart with 4 devices instead of 8: the checkpoint restores onto the smaller mesh.
    resumed = subprocess.run(
        cli_command(_config(), workdir),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4"),
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"resumed from checkpoint at step {stopped}" in resumed.stdout
    assert "devices=4" in resumed.stdout
    losses = train_losses(workdir)
    assert sorted(losses) == list(range(1, NUM_STEPS + 1))
    for step in range(1, NUM_STEPS + 1):
        assert losses[step] == pytest.approx(reference[step], rel=1e-5), step


@pytest.mark.slow
def test_sigkill_during_checkpointing_resumes_from_last_complete(tmp_path, reference):
    workdir = str(tmp_path / "run")
    config = _config(**{"checkpoint.every_steps": 1})  # a write in flight at almost any moment
    proc = start_training(config, workdir)
    _wait_for_step(workdir, 6, proc)
    proc.kill()
    proc.wait()
    ckpt_dir = os.path.join(workdir, "checkpoints")
    complete = sorted(int(d) for d in os.listdir(ckpt_dir) if d.isdigit())
    assert complete, os.listdir(ckpt_dir)
    # Also leave a half-written step behind exactly as an interrupted orbax save does.
    os.makedirs(os.path.join(ckpt_dir, f"{NUM_STEPS + 5}.orbax-checkpoint-tmp-1234", "state"))
    resumed = subprocess.run(
        cli_command(config, workdir), cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"resumed from checkpoint at step {complete[-1]}" in resumed.stdout
    losses = train_losses(workdir)
    for step in range(complete[-1] + 1, NUM_STEPS + 1):
        assert losses[step] == pytest.approx(reference[step], rel=1e-5), step


@pytest.mark.slow
def test_corrupt_checkpoint_gives_clear_error(tmp_path):
    workdir = str(tmp_path / "run")
    training.train(tiny_config(**{"train.num_steps": 3}), workdir)
    state_dir = os.path.join(workdir, "checkpoints", "3", "state")
    for root, _, files in os.walk(state_dir):
        for name in files:
            with open(os.path.join(root, name), "wb") as f:
                f.write(b"garbage")
    with pytest.raises(ValueError, match="checkpoint at step 3 .* could not be restored"):
        training.train(tiny_config(**{"train.num_steps": 6}), workdir)
    assert os.listdir(os.path.join(workdir, "checkpoints")) == ["3"]


def test_checkpoint_of_an_unrolled_layout_is_refused_with_the_paths(tmp_path):
    import grain
    import jax
    import jax.numpy as jnp

    from diffax.training.checkpoint import Checkpointer

    # A checkpoint as written before scanned layers: one tree per block, adaLN as wide as dim.
    old = {"params": {"blocks": {"0": {"ada": jnp.ones((8, 48))}, "1": {"ada": jnp.ones((8, 48))}}}}
    new = {"params": {"blocks": {"ada": jnp.ones((2, 4, 48))}}}
    ckpt = Checkpointer(tmp_path / "checkpoints", keep=1, async_save=False)
    ckpt.save(7, old, iter(grain.MapDataset.range(4).to_iter_dataset()))
    ckpt.wait()
    with pytest.raises(ValueError) as info:
        ckpt.restore(7, jax.eval_shape(lambda: new))
    message = str(info.value)
    assert f"step 7 in {tmp_path / 'checkpoints'}" in message
    assert "params/blocks/0/ada: only in the checkpoint [8, 48]" in message
    assert "params/blocks/ada: missing from the checkpoint (expected [2, 4, 48])" in message
    assert "model.scan_layers=False" in message and "model.cond_dim" in message
    ckpt.restore(7, jax.eval_shape(lambda: old))  # the matching tree restores
    ckpt.close()


@pytest.mark.slow
def test_resume_with_another_layout_names_the_differing_parameters(tmp_path):
    import json

    workdir = tmp_path / "run"
    training.train(tiny_config(**{"train.num_steps": 3, "model.scan_layers": False}), str(workdir))
    # The config file agrees with the new layout (as when config.json was edited or lost), the
    # checkpoint does not: the structure check catches it before orbax reads any array.
    scanned = tiny_config(**{"train.num_steps": 6, "model.scan_layers": True})
    (workdir / "config.json").write_text(json.dumps(scanned.to_dict()))
    with pytest.raises(ValueError, match=r"does not match the model .*blocks.*scan_layers=False"):
        training.train(scanned, str(workdir))
    assert os.listdir(workdir / "checkpoints") == ["3"]
