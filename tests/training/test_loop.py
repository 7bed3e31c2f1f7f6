"""End to end: train, resume, eval, sample and the workdir guards, on a tiny config."""

import json
import os

import pytest

from diffax import training
from tests.training.helpers import tiny_config

# Every test here trains (end to end): the slow tier.
pytestmark = pytest.mark.slow


def _losses(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    return {r["step"]: r["loss"] for r in records if r["split"] == "train"}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("run"))
    result = training.train(tiny_config(), workdir)
    return workdir, result


def test_train_writes_everything(finished):
    workdir, result = finished
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3", "6"]
    assert os.listdir(os.path.join(workdir, "tb"))
    samples = os.listdir(os.path.join(workdir, "samples"))
    assert samples == ["samples_00000006.txt"]
    assert set(_losses(workdir)) == {3, 6}
    assert result["elbo_bits_per_char"] > 0 and result["unigram_entropy"] > 3.5


def test_eval_and_sample_modes(finished):
    workdir, result = finished
    again = training.evaluate(tiny_config(), workdir)
    assert again["elbo_bits_per_char"] == pytest.approx(result["elbo_bits_per_char"], rel=1e-5)
    lines = training.sample(tiny_config(), workdir)
    assert len(lines) == 4 and all(len(line) == 16 for line in lines)
    assert set("".join(lines)) <= set("abcdefghijklmnopqrstuvwxyz ")


def test_eval_and_sample_build_no_training_data(finished, monkeypatch):
    from diffax.data.sources import CorpusSource

    def refuse(*args, **kwargs):
        raise AssertionError("eval/sample built a training dataset")

    monkeypatch.setattr(CorpusSource, "train_dataset", refuse)
    workdir, result = finished
    again = training.evaluate(tiny_config(), workdir)
    assert again["elbo_bits_per_char"] == pytest.approx(result["elbo_bits_per_char"], rel=1e-5)
    assert len(training.sample(tiny_config(), workdir)) == 4


def test_resume_continues_exactly(tmp_path, finished):
    straight, _ = finished
    workdir = str(tmp_path / "resumed")
    training.train(tiny_config(**{"train.num_steps": 3}), workdir)
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3"]
    training.train(tiny_config(), workdir)  # resumes at step 3, runs to 6
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3", "6"]
    resumed = _losses(workdir)
    assert resumed[6] == pytest.approx(_losses(straight)[6], rel=1e-6)


def test_refuses_workdir_of_another_config(finished):
    workdir, _ = finished
    before = open(os.path.join(workdir, "config.json")).read()
    with pytest.raises(ValueError, match="model.dim: 32 -> 48"):
        training.train(tiny_config(**{"model.dim": 48}), workdir)
    assert open(os.path.join(workdir, "config.json")).read() == before
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3", "6"]


def test_refuses_foreign_checkpoint_directory(tmp_path):
    os.makedirs(tmp_path / "checkpoints" / "100")
    with pytest.raises(ValueError, match="no config.json"):
        training.train(tiny_config(), str(tmp_path))
    assert os.listdir(tmp_path) == ["checkpoints"]


def test_eval_without_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        training.evaluate(tiny_config(), str(tmp_path))


def test_batch_not_divisible_by_data_parallel(tmp_path):
    with pytest.raises(ValueError, match="not divisible by data-parallel size 8"):
        training.train(tiny_config(**{"train.batch_size": 12}), str(tmp_path))


def test_lm1b_config_trains_on_mock_tfds(tmp_path):
    import tensorflow_datasets as tfds

    config = tiny_config(
        **{
            "data.source": "tfds",
            "data.dataset": "lm1b",
            "data.data_dir": str(tmp_path),
            "data.tokenizer": "byte",
            "train.num_steps": 2,
            "checkpoint.every_steps": 2,
        }
    )
    with tfds.testing.mock_data(num_examples=64, policy=tfds.testing.MockPolicy.USE_CODE):
        result = training.train(config, str(tmp_path / "run"))
    assert result["elbo_bits_per_char"] > 0 and result["num_sequences"] == 32


def test_markov_source_reports_its_exact_entropy(tmp_path):
    from diffax.data.synthetic import MarkovChainSource

    config = tiny_config(**{"data.source": "markov", "train.num_steps": 2})
    result = training.train(config, str(tmp_path))
    chain = MarkovChainSource(8, 16, 0, 0.5)
    assert result["true_entropy"] == pytest.approx(chain.entropy_bits_per_token())
    assert result["elbo_bits_per_char"] > result["true_entropy"]  # a bound, barely trained
