"""The absl app: bad flags and bad config values give one clear error each."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _main(*args, workdir):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run(
        [sys.executable, "-m", "experiments.main", f"--workdir={workdir}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


@pytest.mark.parametrize(
    "flag,message",
    [
        ("--config.train.not_a_key=1", "not_a_key"),
        ("--config.train.num_steps=abc", "num_steps"),
        ("--config.data.tokenizer=wordpiece", "allowed values: byte, char, text8"),
        ("--config.data.source=text_file", "data.path is empty"),
        ("--config.sample.sampler=nope", "unknown sampler 'nope'"),
    ],
)
def test_bad_config_values(tmp_path, flag, message):
    extra = ["--config.train.num_steps=1", "--config.train.progress_bar=False"]
    if "sampler" in flag:
        extra += ["--config.model.dim=32", "--config.model.depth=1"]
    result = _main(flag, *extra, workdir=tmp_path / "w")
    assert result.returncode != 0
    assert message in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_missing_text_file(tmp_path):
    result = _main(
        "--config.data.source=text_file",
        f"--config.data.path={tmp_path / 'nope.txt'}",
        workdir=tmp_path / "w",
    )
    assert result.returncode == 2
    assert "no such file" in result.stderr
