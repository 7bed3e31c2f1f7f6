"""A tiny text-diffusion config for fast end-to-end tests."""

from configs import base


def tiny_config(**overrides):
    """A config that trains in seconds: 1-block width-32 transformer on length-16 windows."""
    config = base.get_config()
    config.data.seq_len = 16
    config.model.dim = 32
    config.model.depth = 1
    config.model.num_heads = 2
    config.train.num_steps = 6
    config.train.batch_size = 16
    config.train.log_every = 3
    config.train.progress_bar = False
    config.optimizer.warmup_steps = 2
    config.checkpoint.every_steps = 3
    config.eval.batch_size = 16
    config.eval.max_batches = 2
    config.eval.num_time_samples = 1
    config.sample.num_steps = 4
    config.sample.num_samples = 4
    for key, value in overrides.items():
        section, name = key.split(".")
        setattr(getattr(config, section), name, value)
    return config


def cli_command(config, workdir):
    """`python -m experiments.main` with `--config.*` flags for every key `config` changes."""
    import sys

    from configs import base as base_config
    from diffax.training.workdir import flatten

    default, wanted = flatten(base_config.get_config().to_dict()), flatten(config.to_dict())
    flags = [f"--config.{k}={v}" for k, v in wanted.items() if default[k] != v]
    return [
        sys.executable,
        "-m",
        "experiments.main",
        "--config=configs/quickstart.py",
        f"--workdir={workdir}",
        *flags,
    ]


def start_training(config, workdir, devices=8):
    """Starts `cli_command` as a subprocess on `devices` fake CPU devices (output piped)."""
    import os
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    return subprocess.Popen(
        cli_command(config, workdir),
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def train_losses(workdir):
    """{step: training loss} from `workdir/metrics.jsonl`."""
    import json
    import os

    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return {r["step"]: r["loss"] for r in rows if r["split"] == "train"}
