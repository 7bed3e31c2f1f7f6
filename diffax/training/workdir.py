"""Run directories: the config a workdir was started with, and refusing to mix runs.

`workdir/config.json` records the config of the run that owns the workdir. Restarting in the same
workdir resumes only when every key that shapes the model, the data or the objective is unchanged;
keys that may differ between restarts (how long to train, how often to log, evaluate, sample or
checkpoint, the mesh) are listed in `RESUMABLE_PREFIXES`.
"""

from __future__ import annotations

import json
import os
from typing import Any

RESUMABLE_PREFIXES = (
    "train.num_steps",
    "train.log_every",
    "train.progress_bar",
    "checkpoint.",
    "eval.",
    "sample.",
    "mesh.",
    "distributed.",
    "data.data_dir",  # the same TFDS data may live elsewhere on another machine
    "data.num_workers",
)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _normalise(v: Any) -> Any:
    return json.loads(json.dumps(v))


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Keys (outside `RESUMABLE_PREFIXES`) whose values differ, as "key: saved -> current"."""
    a, b = flatten(_normalise(saved)), flatten(_normalise(current))
    diffs = []
    for key in sorted(set(a) | set(b)):
        if key.startswith(RESUMABLE_PREFIXES):
            continue
        if a.get(key, "<absent>") != b.get(key, "<absent>"):
            diffs.append(f"{key}: {a.get(key, '<absent>')!r} -> {b.get(key, '<absent>')!r}")
    return diffs


def prepare_workdir(workdir: str, config: dict[str, Any], *, write: bool = True) -> bool:
    """Checks that `workdir` is empty or belongs to a run of the same config; records the config.

    Args:
      workdir: the run directory.
      config: the run's config as a plain dict.
      write: write `config.json` when it is missing (only the primary process should).

    Returns:
      True when the workdir already held this run (a resume), False for a new run.

    Raises:
      ValueError: the workdir holds a run of a different config, or checkpoints without a
        `config.json` (a foreign directory). Nothing is written in that case.
    """
    path = os.path.join(workdir, "config.json")
    ckpt_dir = os.path.join(workdir, "checkpoints")
    if os.path.exists(path):
        try:
            with open(path) as f:
                saved = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"workdir {workdir!r}: config.json is unreadable ({e})") from None
        diffs = config_differences(saved, config)
        if diffs:
            raise ValueError(
                f"workdir {workdir!r} holds a run with a different config; refusing to resume or "
                "overwrite it. Use a new --workdir, or restore these keys:\n  " + "\n  ".join(diffs)
            )
        return True
    if os.path.isdir(ckpt_dir) and os.listdir(ckpt_dir):
        raise ValueError(
            f"workdir {workdir!r} has a checkpoints/ directory but no config.json: it was not "
            "written by diffax (or is corrupt); refusing to use it. Use a new --workdir."
        )
    if write:
        os.makedirs(workdir, exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(_normalise(config), f, indent=2, sort_keys=True)
        os.replace(tmp, path)
    return False
