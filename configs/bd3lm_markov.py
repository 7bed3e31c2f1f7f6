"""Block diffusion (BD3-LM) on synthetic Markov-chain sequences, whose exact entropy is known.

The eval line prints the block NELBO next to the true entropy (as `configs/markov.py` does for
masked diffusion): the gap is what the model and the bound lose. A first-order chain is where
conditioning on the clean blocks before helps most: with blocks of 4 the bound only has to model
4 symbols at a time given the previous one. CPU-sized (a few minutes).
"""

from configs import base


def get_config():
    config = base.get_config()
    config.data.source = "markov"
    config.data.markov_vocab_size = 8
    config.data.markov_concentration = 0.3
    config.data.seq_len = 32
    config.model.dim = 64
    config.model.depth = 2
    config.model.time_conditioning = False
    config.train.num_steps = 1500
    config.discrete.block_size = 4
    config.eval.max_batches = 8
    config.eval.num_time_samples = 8
    config.sample.kv_cache = "exact"
    config.sample.num_steps = 32  # 8 blocks x 4 steps
    return config
