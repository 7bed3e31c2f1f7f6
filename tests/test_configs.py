"""Every config file loads, defines exactly the base config's keys, and names valid components."""

import glob
import importlib
import os

import pytest

from configs import base
from diffax.training.tasks import build_task
from diffax.training.validate import validate_config
from diffax.training.workdir import flatten

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(
    os.path.splitext(os.path.basename(p))[0]
    for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
    if not p.endswith("__init__.py")
)


@pytest.mark.parametrize("name", CONFIGS)
def test_config_has_exactly_the_base_keys(name):
    config = importlib.import_module(f"configs.{name}").get_config()
    assert set(flatten(config.to_dict())) == set(flatten(base.get_config().to_dict()))
    assert config.is_locked


@pytest.mark.parametrize("name", CONFIGS)
def test_config_passes_validation(name):
    validate_config(importlib.import_module(f"configs.{name}").get_config())


@pytest.mark.parametrize("name", ["owt_small", "owt_1b"])
def test_shard_configs_need_their_data_path(name):
    # The launch configs read prepared shards; without data.path the error names the key.
    config = importlib.import_module(f"configs.{name}").get_config()
    with pytest.raises(ValueError, match="data.path"):
        build_task(config)


def test_base_config_refuses_new_keys():
    config = base.get_config()
    with pytest.raises(AttributeError):
        config.train.new_key = 1


@pytest.mark.parametrize(
    "name", [n for n in CONFIGS if n in ("quickstart", "sedd_uniform", "sedd_masked")]
)
def test_text_configs_build(name):
    config = importlib.import_module(f"configs.{name}").get_config()
    task = build_task(config)
    assert task.model_def.count() > 0
