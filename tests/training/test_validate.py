"""Whole-config validation: every shipped config passes; each bad range names its key."""

import glob
import importlib
import os

import pytest

from configs import base
from diffax.training.validate import validate_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize(
    "name",
    sorted(
        os.path.basename(p)[:-3]
        for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
        if not p.endswith("__init__.py")
    ),
)
def test_shipped_configs_are_valid(name):
    validate_config(importlib.import_module(f"configs.{name}").get_config())


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("train.num_steps", 0, "an integer >= 1"),
        ("train.accum_steps", 0, "an integer >= 1"),
        ("train.batch_size", 0, "an integer >= 1"),
        ("train.ema_decay", 1.5, "[0.0, 1.0]"),
        ("train.max_skipped_fraction", -0.1, "[0.0, 1.0]"),
        ("checkpoint.every_steps", 0, "an integer >= 1"),
        ("checkpoint.keep", 0, "an integer >= 1"),
        ("data.seq_len", 0, "an integer >= 1"),
        ("data.heldout_fraction", 1.0, "(0.0, 1.0)"),
        ("optimizer.lr", float("nan"), "finite"),
        ("optimizer.lr", 0.0, "(0.0, inf)"),
        ("optimizer.b2", 1.0, "[0.0, 1.0)"),
        ("eval.batch_size", 0, "an integer >= 1"),
        ("eval.num_time_samples", 0, "an integer >= 1"),
        ("sample.temperature", 0.0, "(0.0, inf)"),
        ("sample.top_p", 0.0, "(0.0, 1.0]"),
        ("sample.num_steps", 0, "an integer >= 1"),
        ("mesh.fsdp", 0, "or -1"),
        ("continuous.t_max", 1.5, "[0.0, 1.0]"),
        ("model.attention", "flash", "'auto', 'xla', 'cudnn', 'splash'"),
        ("model.remat", "sometimes", "'dots_saveable'"),
        ("model.cond_dim", 0, "an integer >= 1"),
        ("model.vocab_multiple", 0, "an integer >= 1"),
        ("optimizer.moment_dtype", "float16", "'float32', 'bfloat16'"),
        ("train.loss_vocab_chunk", -1, "an integer >= 0"),
        ("train.z_loss", -1e-4, "[0.0, inf)"),
        ("train.z_loss", float("inf"), "finite"),
        ("data.tokenizer_path", "/nonexistent/tokenizer.json", "no such file"),
    ],
)
def test_bad_values_name_the_key(key, value, message):
    config = base.get_config()
    section, name = key.split(".")
    with config.unlocked():
        setattr(getattr(config, section), name, value)
    with pytest.raises(ValueError, match=rf"{key}=") as info:
        validate_config(config)
    assert message in str(info.value)


def test_time_interval_must_be_ordered():
    config = base.get_config()
    config.continuous.t_min, config.continuous.t_max = 0.5, 0.5
    with pytest.raises(ValueError, match="t_min must be smaller than t_max"):
        validate_config(config)


def test_batch_must_split_into_accumulation_steps():
    config = base.get_config()
    config.train.batch_size, config.train.accum_steps = 10, 4
    with pytest.raises(ValueError, match="not divisible by train.accum_steps=4"):
        validate_config(config)


def test_an_existing_tokenizer_file_is_accepted(tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text("{}")
    config = base.get_config()
    config.data.tokenizer_path = str(path)
    validate_config(config)
