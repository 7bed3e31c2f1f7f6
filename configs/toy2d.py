"""Continuous diffusion on a 2-D ring of 8 Gaussians with a small MLP; ~1-2 minutes on a 2-core CPU.

python -m experiments.main --config=configs/toy2d.py --workdir=/tmp/diffax_toy2d

Writes `samples/samples_*.png` (model samples next to data) and reports the sliced Wasserstein
distance of the samples to true samples, the exact data NLL of the samples and the held-out ELBO
in bits/dim next to the exact data entropy. Switch the process with
`--config.process.name=rectified_flow --config.continuous.prediction=velocity
--config.continuous.weighting=flow_matching --config.sample.sampler=ode_heun`.
"""

from configs import base


def get_config():
    config = base.get_config()
    config.task = "continuous_diffusion"
    config.data.source = "toy"
    config.data.dataset = "gaussian_ring"
    config.data.num_heldout = 4096

    config.process.name = "vp"
    config.process.schedule = "linear"
    config.continuous.prediction = "eps"
    config.continuous.weighting = "eps"
    config.continuous.time_sampler = "stratified"

    config.model.arch = "mlp"
    config.model.dim = 128
    config.model.depth = 3
    config.model.mlp_ratio = 2.0

    config.train.loss = "dsm"
    config.train.num_steps = 3000
    config.train.batch_size = 512
    config.train.ema_decay = 0.999
    config.train.log_every = 500
    config.optimizer.lr = 2e-3
    config.optimizer.warmup_steps = 100
    config.checkpoint.every_steps = 1000

    config.eval.batch_size = 512
    config.eval.num_time_samples = 8
    config.eval.likelihood = "elbo"

    config.sample.sampler = "dpm_solver_pp_2m"
    config.sample.num_steps = 50
    config.sample.num_samples = 2048
    config.sample.num_print = 1
    return config
