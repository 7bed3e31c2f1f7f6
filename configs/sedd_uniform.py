"""SEDD with the uniform process: concrete-score network, denoising score entropy, Tweedie steps.

Lou et al. 2024. Runs on the built-in corpus on a CPU (slowly) or a GPU; the uniform process is
harder than the masked one, so expect a higher ELBO at equal compute.
"""

from configs import base


def get_config():
    config = base.get_config()
    config.process.name = "uniform"
    config.process.schedule = "geometric"
    config.process.schedule_sigma_min = 1e-4
    config.process.schedule_sigma_max = 20.0
    config.discrete.prediction = "concrete_score"
    config.train.loss = "score_entropy"
    config.train.num_steps = 5000
    config.sample.sampler = "analytic"
    config.sample.num_steps = 128
    return config
