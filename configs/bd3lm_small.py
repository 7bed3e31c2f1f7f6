"""Block diffusion (BD3-LM) on the built-in character corpus: the quick start's budget, on CPU.

python -m experiments.main --config=configs/bd3lm_small.py --workdir=/tmp/bd3

Same data, network and budget as `configs/quickstart.py` (L = 64, width 128, 3 layers, 1500 steps
of 64 sequences), trained on the two-stream input [x_t ; x_0] with blocks of 4 characters: the
model is autoregressive over 16 blocks and a masked diffusion inside each. The held-out number
is the block NELBO (times over the whole [0, 1]), comparable with the quick start's masked ELBO.
Sampling decodes block by block with an exact key/value cache (4 steps per block).
Time-free network, as in BD3-LM (the mask pattern carries the noise level).
"""

from configs import quickstart


def get_config():
    config = quickstart.get_config()
    config.model.time_conditioning = False
    config.discrete.block_size = 4
    config.sample.kv_cache = "exact"
    config.sample.num_steps = 64  # 16 blocks x 4 steps
    return config
