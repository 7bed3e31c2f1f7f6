"""`sample.options`: parsed once, merged with temperature / top_p, checked per sampler."""

import pytest

from configs import base, shakespeare_masked, toy2d
from diffax.core.validation import UnknownOptionError
from diffax.training.tasks import TASKS, parse_options, sample_options
from diffax.training.validate import validate_config


def test_parse_options():
    assert parse_options("") == {} and parse_options("  ") == {}
    assert parse_options("eta=0.5, strategy='cap'") == {"eta": 0.5, "strategy": "cap"}
    assert parse_options("block_length=16, cache=True,") == {"block_length": 16, "cache": True}
    for bad in ("eta", "0.5", "eta=0.5 x", "eta=f(1)", "eta=1, eta=2", "**x"):
        with pytest.raises(ValueError, match="sample.options=.*keyword=literal"):
            parse_options(bad)


def _sample(**overrides):
    config = base.get_config()
    for key, value in overrides.items():
        setattr(config.sample, key, value)
    return config.sample


def test_options_are_merged_with_temperature_and_top_p():
    discrete = TASKS.get("text_diffusion").sampler_options
    got = sample_options(_sample(sampler="remdm", options="eta=0.1", top_p=0.9), discrete)
    assert got == {"eta": 0.1, "top_p": 0.9}
    assert sample_options(_sample(), discrete) == {}  # neutral values are not passed
    with pytest.raises(ValueError, match="both set 'temperature'"):
        sample_options(_sample(options="temperature=0.5", temperature=0.7), discrete)


def test_misspelled_option_names_the_allowed_ones():
    discrete = TASKS.get("text_diffusion").sampler_options
    with pytest.raises(UnknownOptionError, match="unknown option 'eat'.*allowed options: eta"):
        sample_options(_sample(sampler="remdm", options="eat=0.1"), discrete)
    with pytest.raises(ValueError, match="sample.sampler='nope' is not allowed"):
        sample_options(_sample(sampler="nope"), discrete)


def test_validate_checks_options_against_the_tasks_half():
    validate_config(shakespeare_masked.get_config())  # remdm with eta, strategy
    config = toy2d.get_config()
    config.sample.sampler, config.sample.options = "edm_heun", "s_churn=1.0"
    validate_config(config)
    config.sample.temperature = 0.5  # a discrete option: no continuous sampler takes it
    with pytest.raises(UnknownOptionError, match="'temperature' for sampler 'edm_heun'"):
        validate_config(config)


def test_task_passes_the_options_to_its_sampler():
    config = shakespeare_masked.get_config()
    config.data.source, config.data.tokenizer = "builtin", "text8"
    config.model.dim, config.model.depth, config.model.num_heads = 16, 1, 2
    task = TASKS.get("text_diffusion")(config)
    assert task.sampler == "remdm"
    assert task.sample_options == {"eta": 0.02, "strategy": "cap"}
