"""diffax experiments: one absl app for training, evaluation and sampling.

  python -m experiments.main --config=configs/quickstart.py --workdir=/tmp/run [--mode=train]
  python -m experiments.main --config=configs/quickstart.py --workdir=/tmp/run --mode=eval
  python -m experiments.main --config=configs/quickstart.py --workdir=/tmp/run --mode=sample

Override any config key on the command line: `--config.train.num_steps=200`.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", "configs/quickstart.py", "Path to an ml-collections config file.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, logs, samples).")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval", "sample"], "What to do.")
flags.mark_flag_as_required("workdir")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    # Imported here so `--help` and flag errors do not pay for importing JAX.
    from diffax import training

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
    app.run(main)
