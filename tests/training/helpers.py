"""A tiny text-diffusion config for fast end-to-end tests."""

from configs import base


def tiny_config(**overrides):
    """A config that trains in seconds: 1-block width-32 transformer on length-16 windows."""
    config = base.get_config()
    config.data.seq_len = 16
    config.model.dim = 32
    config.model.depth = 1
    config.model.num_heads = 2
    config.train.num_steps = 6
    config.train.batch_size = 16
    config.train.log_every = 3
    config.train.progress_bar = False
    config.optimizer.warmup_steps = 2
    config.checkpoint.every_steps = 3
    config.eval.batch_size = 16
    config.eval.max_batches = 2
    config.eval.num_samples = 1
    config.sample.num_steps = 4
    config.sample.num_samples = 4
    for key, value in overrides.items():
        section, name = key.split(".")
        setattr(getattr(config, section), name, value)
    return config
