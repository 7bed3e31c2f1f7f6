"""End to end: the continuous-diffusion task on toy 2-D data and on (mocked) MNIST."""

import json
import os

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import checkerboard, cifar10, mnist, toy2d
from diffax import training
from diffax.training.tasks import ContinuousDiffusionTask


def _set(config, overrides):
    for key, value in overrides.items():
        section, name = key.split(".")
        setattr(getattr(config, section), name, value)
    return config


def tiny_toy(**overrides):
    """The toy2d config shrunk to seconds: width-16 MLP, 6 steps, batch 16 (8 fake devices)."""
    config = toy2d.get_config()
    return _set(
        config,
        {
            "model.dim": 16,
            "model.depth": 1,
            "model.time_features": 8,
            "train.num_steps": 6,
            "train.batch_size": 16,
            "train.log_every": 3,
            "train.progress_bar": False,
            "optimizer.warmup_steps": 2,
            "checkpoint.every_steps": 3,
            "data.num_heldout": 32,
            "eval.batch_size": 16,
            "eval.num_time_samples": 1,
            "sample.num_steps": 4,
            "sample.num_samples": 16,
            **overrides,
        },
    )


@pytest.mark.slow
def test_toy_train_eval_sample(tmp_path):
    # One test (not a shared fixture), so pytest-xdist never trains the toy model twice.
    workdir = str(tmp_path)
    result = training.train(tiny_toy(), workdir)
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3", "6"]
    assert sorted(os.listdir(os.path.join(workdir, "samples"))) == [
        "samples_00000006.npy",
        "samples_00000006.png",
    ]
    samples = np.load(os.path.join(workdir, "samples", "samples_00000006.npy"))
    assert samples.shape == (16, 2) and np.all(np.isfinite(samples))
    assert np.isfinite(result["elbo_bits_per_dim"]) and result["num_sequences"] == 32
    # Exact log-density of 32 held-out points (the ring's entropy is ~0.80 bits/dim).
    assert 0.4 < result["data_entropy_bits_per_dim"] < 1.2
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    assert {r["step"] for r in records if r["split"] == "train"} == {3, 6}
    lines = training.sample(tiny_toy(), workdir)
    assert lines[0].startswith("sliced W2 to 16 true samples") and len(lines) == 17
    pf_ode = training.evaluate(tiny_toy(**{"eval.likelihood": "pf_ode"}), workdir)
    assert np.isfinite(pf_ode["nll_bits_per_dim"])


@pytest.mark.slow
def test_mnist_with_mock_data(tmp_path):
    config = _set(
        mnist.get_config(),
        {
            "data.data_dir": str(tmp_path),
            "model.dim": 8,
            # One level, no attention: the U-Net's resolutions and attention are covered in
            # tests/nn/test_unet.py; here compile time (8 fake devices) is what counts.
            "model.channel_mults": (1,),
            "model.num_res_blocks": 1,
            "model.attention_levels": (),
            "model.num_heads": 1,
            "model.num_groups": 4,
            "train.num_steps": 2,
            "train.batch_size": 8,
            "train.log_every": 1,
            "train.progress_bar": False,
            "optimizer.warmup_steps": 1,
            "checkpoint.every_steps": 2,
            "eval.every_steps": 0,
            "eval.batch_size": 8,
            "eval.max_batches": 1,
            "sample.every_steps": 0,
            "sample.num_steps": 2,
            "sample.num_samples": 4,
        },
    )
    workdir = str(tmp_path / "run")
    with tfds.testing.mock_data(num_examples=16, policy=tfds.testing.MockPolicy.USE_CODE):
        result = training.train(config, workdir)
    assert np.isfinite(result["elbo_bits_per_dim"]) and result["num_sequences"] == 8
    samples = np.load(os.path.join(workdir, "samples", "samples_00000002.npy"))
    assert samples.shape == (4, 28, 28, 1)
    assert os.path.getsize(os.path.join(workdir, "samples", "samples_00000002.png")) > 0


def test_configs_build_and_validate(tmp_path):
    for module in (toy2d, checkerboard):
        task = ContinuousDiffusionTask(module.get_config())
        assert task.tokens_per_example() == 2 and task.unit == "dim"
    for module in (mnist, cifar10):  # the image configs need their data: a clear error without
        config = _set(module.get_config(), {"data.data_dir": str(tmp_path / "none")})
        with pytest.raises(ValueError, match="is not a directory"):
            ContinuousDiffusionTask(config)
    bad = {
        "data.dataset": ("spiral", "allowed values: a toy distribution .checkerboard"),
        "process.name": ("vpp", "allowed values: cosine, edm"),
        "train.loss": ("masked_elbo", "allowed values: 'dsm'"),
        "continuous.weighting": ("l2", "continuous.weighting"),
        "sample.sampler": ("ancestral", "sample.sampler"),
        "model.arch": ("unet", "use model.arch='mlp'"),
        "eval.likelihood": ("exact", "eval.likelihood"),
        "continuous.preconditioning": ("edm", "set continuous.prediction='x0'"),
    }
    for key, (value, message) in bad.items():
        with pytest.raises(ValueError, match=message):
            ContinuousDiffusionTask(tiny_toy(**{key: value}))


@pytest.mark.parametrize(
    "overrides",
    [
        {
            "process.name": "edm",
            "continuous.prediction": "x0",
            "continuous.weighting": "edm",
            "continuous.preconditioning": "edm",
            "continuous.time_sampler": "lognormal",
        },
        {
            "process.name": "rectified_flow",
            "continuous.prediction": "velocity",
            "continuous.weighting": "flow_matching",
        },
        {
            "process.name": "vp",
            "process.schedule": "cosine",
            "continuous.prediction": "v",
            "continuous.weighting": "likelihood",
            "continuous.time_sampler": "importance",
        },
    ],
)
def test_loss_and_elbo_for_other_processes(overrides):
    task = ContinuousDiffusionTask(tiny_toy(**overrides))
    params = task.init_params()
    batch = task.source.eval_batches(16, 0)[0]
    loss, _ = jax.jit(task.loss)(params, jax.random.key(0), batch)
    nats = jax.jit(lambda p, k, b: task.eval_nats(p, k, b, 1))(params, jax.random.key(1), batch)
    assert np.isfinite(loss) and loss > 0
    assert nats.shape == (16,) and np.all(np.isfinite(nats))
