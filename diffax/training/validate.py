"""Whole-config validation, run before a run writes anything to its workdir.

`validate_config` checks every value range the train/eval/sample code relies on (counts, sizes,
probabilities, learning-rate and time intervals), so that a bad value is one `ValueError` naming
the key, its value and what is allowed, raised before `config.json`, checkpoints or logs exist.
It also checks `sample.options` (with `sample.temperature` / `sample.top_p`) against the keywords
of `sample.sampler` in the task's half, so a misspelled option is one error naming it and the
allowed ones. Other choices by name (processes, tokenizers, ...) and the parameters of library
objects (schedules, processes) are checked where they are resolved, when the task is built; that
also happens before anything is written (see `diffax.training.loop.train`).
"""

from __future__ import annotations

import math
from typing import Any

# sample.kv_cache: "exact" / "none" for block diffusion models, "none" / "prefix" / "dual" for
# semi-autoregressive decoding of full-attention models (the task checks which applies).
SAMPLE_KV_CACHES = ("none", "exact", "prefix", "dual")


def _fail(key: str, value: Any, allowed: str) -> None:
    raise ValueError(f"{key}={value!r} is not allowed; allowed values: {allowed}")


def _int(config, key: str, minimum: int, extra: tuple[int, ...] = ()) -> None:
    value = _get(config, key)
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(key, value, f"an integer >= {minimum}")
    if value < minimum and value not in extra:
        allowed = f"an integer >= {minimum}" + "".join(f" or {e}" for e in extra)
        _fail(key, value, allowed)


def _real(
    config,
    key: str,
    low: float,
    high: float,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    value = _get(config, key)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (
            value < high if high_open else value <= high
        )
    if not ok:
        lo = f"({low}" if low_open else f"[{low}"
        hi = f"{high})" if high_open else f"{high}]"
        _fail(key, value, f"a finite number in {lo}, {hi}")


def _get(config, key: str) -> Any:
    node = config
    for part in key.split("."):
        node = node[part]
    return node


_INF = math.inf
MOMENT_DTYPES = ("float32", "bfloat16")


def _choice(config, key: str, allowed) -> None:
    value = _get(config, key)
    if value not in allowed:
        _fail(key, value, ", ".join(map(repr, allowed)))


def _bool(config, key: str) -> None:
    value = _get(config, key)
    if not isinstance(value, bool):
        _fail(key, value, "True, False")


def _check_model_choices(config) -> None:
    """`model.attention` is an attention backend and `model.remat` a remat policy name."""
    from diffax.nn.attention import BACKENDS
    from diffax.nn.layers import REMAT_POLICIES

    _choice(config, "model.attention", BACKENDS)
    _choice(config, "model.remat", REMAT_POLICIES)


def _check_tokenizer_path(config) -> None:
    """`data.tokenizer_path`, when set, names an existing file (a local path or a URL path)."""
    path = _get(config, "data.tokenizer_path")
    if not isinstance(path, str):
        _fail("data.tokenizer_path", path, "'' (no tokenizer file) or the path of a file")
    if not path:
        return
    from etils import epath

    if not epath.Path(path).is_file():
        raise ValueError(
            f"data.tokenizer_path={path!r}: no such file; allowed values: '' (no tokenizer file) "
            "or the path of a tokenizers JSON (*.json) or sentencepiece model (*.model)"
        )


def validate_config(config) -> None:
    """Raises `ValueError` naming the first key whose value the run cannot use.

    Args:
      config: the run's `ml_collections.ConfigDict` (every key of `configs/base.py`).
    """
    # data
    _int(config, "data.seq_len", 1)
    _real(config, "data.heldout_fraction", 0.0, 1.0, low_open=True, high_open=True)
    _int(config, "data.num_workers", 0)
    _int(config, "data.markov_vocab_size", 2)
    _real(config, "data.markov_concentration", 0.0, _INF, low_open=True, high_open=True)
    _int(config, "data.num_heldout", 1)
    _check_tokenizer_path(config)
    # discrete: block diffusion and prefix conditioning
    _int(config, "discrete.block_size", 0)
    _real(config, "discrete.t_min", 0.0, 1.0)
    _real(config, "discrete.t_max", 0.0, 1.0)
    d = config.discrete
    if not d.t_min < d.t_max:
        raise ValueError(
            f"discrete.t_min={d.t_min!r} and discrete.t_max={d.t_max!r}: t_min must be "
            "smaller than t_max (both in [0, 1])"
        )
    _int(config, "discrete.cond_prefix", 0)
    _real(config, "discrete.cond_dropout", 0.0, 1.0)
    # model
    for key in ("model.dim", "model.depth", "model.num_heads", "model.time_features"):
        _int(config, key, 1)
    _real(config, "model.mlp_ratio", 0.0, _INF, low_open=True, high_open=True)
    _int(config, "model.num_res_blocks", 1)
    _int(config, "model.num_groups", 1)
    _int(config, "model.cond_dim", 1)
    _int(config, "model.vocab_multiple", 1)
    _bool(config, "model.scan_layers")
    _check_model_choices(config)
    # optimizer
    _real(config, "optimizer.lr", 0.0, _INF, low_open=True, high_open=True)
    _int(config, "optimizer.warmup_steps", 0)
    _real(config, "optimizer.weight_decay", 0.0, _INF, high_open=True)
    _real(config, "optimizer.b1", 0.0, 1.0, high_open=True)
    _real(config, "optimizer.b2", 0.0, 1.0, high_open=True)
    _real(config, "optimizer.grad_clip", 0.0, _INF, high_open=True)
    _choice(config, "optimizer.moment_dtype", MOMENT_DTYPES)
    # train
    for key in ("train.num_steps", "train.batch_size", "train.accum_steps", "train.log_every"):
        _int(config, key, 1)
    _real(config, "train.ema_decay", 0.0, 1.0)
    _int(config, "train.dead_run_window", 1)
    _real(config, "train.max_skipped_fraction", 0.0, 1.0)
    _int(config, "train.loss_vocab_chunk", 0)
    _real(config, "train.z_loss", 0.0, _INF, high_open=True)
    # mesh
    for key in ("mesh.data", "mesh.fsdp", "mesh.model"):
        _int(config, key, 1, extra=(-1,))
    # checkpoint
    _int(config, "checkpoint.every_steps", 1)
    _int(config, "checkpoint.keep", 1)
    _int(config, "checkpoint.keep_every", 0)
    # eval
    _int(config, "eval.every_steps", 0)
    _int(config, "eval.batch_size", 1)
    _int(config, "eval.num_time_samples", 1)
    _int(config, "eval.max_batches", 0)
    # sample
    _int(config, "sample.num_steps", 1)
    _real(config, "sample.temperature", 0.0, _INF, low_open=True, high_open=True)
    _real(config, "sample.top_p", 0.0, 1.0, low_open=True)
    _int(config, "sample.num_samples", 1)
    _int(config, "sample.num_print", 0)
    _int(config, "sample.every_steps", 0)
    _real(config, "sample.guidance_scale", -_INF, _INF, low_open=True, high_open=True)
    _int(config, "sample.block_size", 0)
    _choice(config, "sample.kv_cache", SAMPLE_KV_CACHES)
    _int(config, "sample.refresh_every", 0)
    _int(config, "sample.eos_id", 0, extra=(-1,))
    _int(config, "sample.max_length", 0)
    # continuous
    _real(config, "continuous.t_min", 0.0, 1.0)
    _real(config, "continuous.t_max", 0.0, 1.0)
    c = config.continuous
    if not c.t_min < c.t_max:
        raise ValueError(
            f"continuous.t_min={c.t_min!r} and continuous.t_max={c.t_max!r}: t_min must be "
            "smaller than t_max (both in [0, 1])"
        )
    _real(config, "continuous.sigma_data", 0.0, _INF, low_open=True, high_open=True)
    _check_sample_options(config)
    t = config.train
    if t.batch_size % t.accum_steps:
        raise ValueError(
            f"train.batch_size={t.batch_size} is not divisible by train.accum_steps="
            f"{t.accum_steps}; allowed: a batch size that is a multiple of accum_steps"
        )


def _check_sample_options(config) -> None:
    """`sample.sampler` names a sampler of the task's half and every option is one of its own."""
    from diffax.training.tasks import TASKS, sample_options

    sample_options(config.sample, TASKS.get(config.task, "task").sampler_options)
