"""diffax experiments: one absl app for training, evaluation and sampling.

  python -m experiments.main --config=configs/quickstart.py --workdir=/tmp/run [--mode=train]
  python -m experiments.main --config=configs/quickstart.py --workdir=/tmp/run --mode=eval
  python -m experiments.main --config=configs/quickstart.py --workdir=/tmp/run --mode=sample

Override any config key on the command line: `--config.train.num_steps=200`.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags


def _unknown_config_key(argv: list[str]) -> str | None:
    """The first `--config.a.b=v` override whose key the base config does not define."""
    from configs import base

    config = base.get_config()
    for arg in argv:
        if not arg.startswith("--config."):
            continue
        path = arg[len("--config.") :].split("=", 1)[0].split(".")
        node = config
        for i, part in enumerate(path):
            if not hasattr(node, "keys") or part not in node:
                parent = ".".join(path[:i]) or "<root>"
                allowed = ", ".join(sorted(node.keys())) if hasattr(node, "keys") else "(a leaf)"
                return (
                    f"--config.{'.'.join(path)}: unknown config key {'.'.join(path)!r}; "
                    f"keys of {parent!r}: {allowed}"
                )
            node = node[part]
    return None


if __name__ == "__main__":
    # ml-collections applies `--config.*` overrides while the flag is defined, so an unknown key
    # must be caught before that to give one clear line instead of a traceback.
    _problem = _unknown_config_key(sys.argv[1:])
    if _problem:
        print(f"error: {_problem}", file=sys.stderr)
        sys.exit(2)

_CONFIG = config_flags.DEFINE_config_file(
    "config", "configs/quickstart.py", "Path to an ml-collections config file.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, logs, samples).")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval", "sample"], "What to do.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0 for multi-process runs (see launch/)."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Total number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
flags.mark_flag_as_required("workdir")


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing that reports a bad flag or config value as one line, not a traceback."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # hide JAX's INFO lines about absent backends
    # Imported here so `--help` and flag errors do not pay for importing JAX.
    from diffax import training
    from diffax.training import distributed

    distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    config, workdir = _CONFIG.value, os.path.abspath(_WORKDIR.value)
    try:
        if _MODE.value == "train":
            training.train(config, workdir)
        elif _MODE.value == "eval":
            training.evaluate(config, workdir)
        else:
            training.sample(config, workdir)
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
