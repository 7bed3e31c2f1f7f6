"""The absl app: bad flags and bad config values give one clear error each."""

import os
import shutil
import subprocess
import sys

import pytest

# Every test here starts `python -m experiments.main` in a subprocess: the slow tier.
pytestmark = pytest.mark.slow

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


def test_misspelled_sampler_option_fails_before_anything_is_written(tmp_path):
    from tests.training.helpers import cli_command, tiny_config

    config = tiny_config(**{"sample.sampler": "remdm", "sample.options": "eat=0.1"})
    workdir = tmp_path / "w"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    result = subprocess.run(
        cli_command(config, workdir), cwd=ROOT, capture_output=True, text=True, env=env
    )
    _assert_one_line_error(result, 2, "unknown option 'eat' for sampler 'remdm'")
    assert "allowed options: eta, strategy" in result.stderr
    assert not workdir.exists()


def test_missing_text_file(tmp_path):
    result = _main(
        "--config.data.source=text_file",
        f"--config.data.path={tmp_path / 'nope.txt'}",
        workdir=tmp_path / "w",
    )
    assert result.returncode == 2
    assert "no such file" in result.stderr


# ---- every failure is one line on stderr, exit 2 (usage) or 1 (runtime), no traceback --------

_TINY = [
    "--config.train.progress_bar=False",
    "--config.model.dim=32",
    "--config.model.depth=1",
    "--config.model.num_heads=2",
    "--config.data.seq_len=16",
    "--config.train.batch_size=16",
    "--config.eval.batch_size=16",
    "--config.eval.max_batches=1",
    "--config.sample.num_samples=4",
    "--config.sample.num_steps=4",
    "--config.optimizer.warmup_steps=2",
]


def _assert_one_line_error(result, code, message):
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert result.returncode == code, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert len(errors) == 1 and message in errors[0], result.stderr[-3000:]
    # Nothing else of ours on stderr: at most library warnings (absl "W..." lines).
    assert all(line.startswith(("error: ", "W")) for line in lines), lines


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--config.train.accum_steps=0"], "train.accum_steps=0"),
        (["--config.checkpoint.every_steps=0"], "checkpoint.every_steps=0"),
        (["--config.data.seq_len=0"], "data.seq_len=0"),
        (["--config.train.num_steps=-5"], "train.num_steps=-5"),
        (["--config.train.batch_size=0"], "train.batch_size=0"),
        (["--config.sample.temperature=0"], "sample.temperature=0"),
        (["--config.sample.top_p=0"], "sample.top_p=0"),
        (["--config.eval.batch_size=100000"], "eval.batch_size"),
        (
            ["--config.continuous.t_min=0.9", "--config.continuous.t_max=0.1"],
            "t_min must be smaller than t_max",
        ),
        (
            [
                "--config=configs/toy2d.py",
                "--config.continuous.t_min=0.5",
                "--config.continuous.t_max=0.2",
            ],
            "t_min must be smaller than t_max",
        ),
    ],
)
def test_bad_values_fail_before_anything_is_written(tmp_path, flags, message):
    workdir = tmp_path / "w"
    config = [f for f in flags if f.startswith("--config=")] or ["--config=configs/quickstart.py"]
    rest = [f for f in flags if not f.startswith("--config=")]
    result = _main(*config, *_TINY, *rest, workdir=workdir)
    _assert_one_line_error(result, 2, message)
    assert not workdir.exists()


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_missing_config_file(tmp_path):
    result = _main(f"--config={tmp_path / 'nope.py'}", workdir=tmp_path / "w")
    _assert_one_line_error(result, 2, "no such config file")


def test_config_file_with_syntax_error(tmp_path):
    path = _write(tmp_path, "broken.py", "def get_config(:\n    pass\n")
    result = _main(f"--config={path}", workdir=tmp_path / "w")
    _assert_one_line_error(result, 2, "syntax error in the config file at line 1")


def test_config_file_setting_unknown_key(tmp_path):
    text = (
        "from configs import base\n\ndef get_config():\n    c = base.get_config()\n"
        "    c.train.not_a_key = 3\n    return c\n"
    )
    path = _write(tmp_path, "unknown.py", text)
    result = _main(f"--config={path}", workdir=tmp_path / "w")
    _assert_one_line_error(result, 2, "sets key 'not_a_key'")


def test_workdir_that_is_a_file(tmp_path):
    path = _write(tmp_path, "afile", "x")
    result = _main(*_TINY, workdir=path)
    _assert_one_line_error(result, 2, "is a file, not a directory")


def _mount_tmpfs(path, options):
    """Mounts a tmpfs at `path` (root only; skips the test where mounting is not allowed)."""
    os.makedirs(path, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a tmpfs")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)])
    if done.returncode != 0:
        pytest.skip("mounting a tmpfs is not allowed here")


def test_workdir_without_write_permission(tmp_path):
    parent = tmp_path / "ro"
    if os.geteuid() == 0:  # root ignores permission bits: use a read-only filesystem instead
        _mount_tmpfs(parent, "ro,size=64k")
    else:
        parent.mkdir()
        parent.chmod(0o500)
    try:
        result = _main(*_TINY, workdir=parent / "w")
        _assert_one_line_error(result, 2, "is not writable")
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(parent)])
        else:
            parent.chmod(0o700)


@pytest.mark.slow
def test_disk_full_is_one_line_and_resumable(tmp_path):
    mount = tmp_path / "small"
    # Room for two checkpoints of the tiny model (about 1.9 MB each: parameters, EMA and two
    # Adam moments of ~100k float32 values, plus orbax metadata); the third fills the disk.
    _mount_tmpfs(mount, "size=5m")
    try:
        args = [*_TINY, "--config.train.num_steps=30", "--config.checkpoint.every_steps=1"]
        result = _main(*args, workdir=mount / "w")
        _assert_one_line_error(result, 1, "disk full while writing to --workdir")
        complete = [d for d in os.listdir(mount / "w" / "checkpoints") if d.isdigit()]
        assert complete, "the checkpoints written before the disk filled up are kept"
    finally:
        subprocess.run(["umount", str(mount)])


def test_debug_flag_shows_the_traceback(tmp_path):
    result = _main(*_TINY, "--config.train.accum_steps=0", "--debug", workdir=tmp_path / "w")
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "train.accum_steps=0" in result.stderr


@pytest.mark.parametrize("lr", ["1e30", "1e38"])
def test_diverged_run_exits_nonzero_with_the_reason(tmp_path, lr):
    args = [
        *_TINY,
        f"--config.optimizer.lr={lr}",
        "--config.train.num_steps=12",
        "--config.train.log_every=2",
        "--config.train.dead_run_window=4",
        "--config.checkpoint.every_steps=3",
    ]
    result = _main(*args, workdir=tmp_path / "w")
    _assert_one_line_error(result, 1, "training diverged")
    steps = [int(d) for d in os.listdir(tmp_path / "w" / "checkpoints") if d.isdigit()]
    assert max(steps, default=0) < 12  # stopped before the end, nothing saved past the failure


def test_failed_start_leaves_workdir_empty_and_rerun_works(tmp_path):
    workdir = tmp_path / "w"
    workdir.mkdir()
    short = _write(tmp_path, "short.txt", "hello world, far too short\n")
    result = _main(
        *_TINY, "--config.data.source=text_file", f"--config.data.path={short}", workdir=workdir
    )
    _assert_one_line_error(result, 2, "")
    assert os.listdir(workdir) == []
    corrected = _main(*_TINY, "--config.train.num_steps=2", workdir=workdir)
    assert corrected.returncode == 0, corrected.stderr[-3000:]
    assert "held-out ELBO" in corrected.stdout


def test_profile_steps_writes_a_trace_and_counts_are_printed(tmp_path):
    workdir = tmp_path / "w"
    args = [*_TINY, "--config.train.num_steps=4", "--profile_steps=1,3"]
    result = _main(*args, workdir=workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    traces = [f for _, _, files in os.walk(workdir / "profile") for f in files]
    assert any(f.endswith(".xplane.pb") for f in traces), traces
    assert "wrote a profiler trace of steps 1..2" in result.stdout
    # The parameter count with and without the vocabulary-sized and the adaLN parameters.
    line = next(x for x in result.stdout.splitlines() if x.startswith("task="))
    total = int(line.split("params=")[1].split()[0].replace(",", ""))
    no_embed = int(line.split("without embeddings: ")[1].split(";")[0].replace(",", ""))
    body = int(line.split("without embeddings and adaLN: ")[1].split(")")[0].replace(",", ""))
    assert total > no_embed > body > 0


@pytest.mark.parametrize("value", ["5", "3,3", "a,b", "-1,2"])
def test_bad_profile_steps(tmp_path, value):
    result = _main(*_TINY, f"--profile_steps={value}", workdir=tmp_path / "w")
    _assert_one_line_error(result, 2, "--profile_steps=")
    assert not (tmp_path / "w").exists()
