"""SEDD with the absorbing (masked) process: concrete scores and score entropy.

A log-linear schedule keeps alpha(1) = eps > 0, which concrete scores of the masked process need
(log ratios against the mask state are finite only while some probability mass is unmasked).
"""

from configs import base


def get_config():
    config = base.get_config()
    config.process.name = "masked"
    config.process.schedule = "loglinear"
    config.process.schedule_eps = 1e-3
    config.discrete.prediction = "concrete_score"
    config.train.loss = "score_entropy"
    config.train.num_steps = 5000
    config.sample.sampler = "analytic"
    config.sample.num_steps = 128
    return config
