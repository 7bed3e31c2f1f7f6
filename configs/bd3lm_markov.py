"""Block diffusion (BD3-LM) on synthetic Markov-chain sequences, whose exact entropy is known.

The eval line prints the block NELBO next to the true entropy (as `configs/markov.py` does for
masked diffusion): the gap is what the model and the bound lose. A first-order chain is where
conditioning on the clean blocks before helps most: with blocks of 4 the bound only has to model
4 symbols at a time given the previous one. CPU-sized (a few minutes).
"""

from configs import markov


def get_config():
    config = markov.get_config()
    config.model.time_conditioning = False
    config.discrete.block_size = 4
    config.sample.kv_cache = "exact"
    config.sample.num_steps = 32  # 8 blocks x 4 steps
    return config
