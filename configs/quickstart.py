"""Quick start: masked diffusion on the built-in character corpus; ~5 minutes on a 2-core CPU.

python -m experiments.main --config=configs/quickstart.py --workdir=/tmp/diffax_quickstart
"""

from configs import base


def get_config():
    config = base.get_config()
    config.data.source = "builtin"
    config.data.seq_len = 64
    config.model.dim = 128
    config.model.depth = 3
    config.train.num_steps = 1500
    config.train.batch_size = 64
    return config
