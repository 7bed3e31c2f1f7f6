"""Masked diffusion on synthetic Markov-chain sequences, whose exact entropy is known.

The eval line prints the ELBO next to the true entropy: the gap is what the model and the bound
lose. CPU-sized (a few minutes).
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
    config.train.num_steps = 1500
    config.eval.max_batches = 8
    config.eval.num_time_samples = 8
    return config
