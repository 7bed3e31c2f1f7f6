"""DDPM-style continuous diffusion on MNIST with a U-Net (GPU/TPU sized).

Prepare the data once (on a machine with TensorFlow and network access), then train:

  tfds build mnist --data_dir=$TFDS_DATA_DIR --file_format=array_record
  python -m experiments.main --config=configs/mnist.py --workdir=/tmp/diffax_mnist \
      --config.data.data_dir=$TFDS_DATA_DIR

`data.data_dir` defaults to $TFDS_DATA_DIR, else ~/tensorflow_datasets. Evaluation reports the
continuous-time ELBO in bits/dim of the 8-bit pixels (uniform dequantization).
"""

import os

from configs import base


def default_tfds_dir() -> str:
    """$TFDS_DATA_DIR, else TFDS's default ~/tensorflow_datasets."""
    return os.environ.get("TFDS_DATA_DIR", os.path.expanduser("~/tensorflow_datasets"))


def get_config():
    config = base.get_config()
    config.task = "continuous_diffusion"
    config.data.source = "tfds_images"
    config.data.dataset = "mnist"
    config.data.data_dir = default_tfds_dir()
    config.data.train_split = "train"
    config.data.eval_split = "test"

    config.process.name = "vp"
    config.process.schedule = "linear"
    config.continuous.prediction = "eps"
    config.continuous.weighting = "eps"
    config.continuous.time_sampler = "stratified"

    config.model.arch = "unet"
    config.model.dim = 64
    config.model.channel_mults = (1, 2, 2)  # 28 -> 14 -> 7
    config.model.num_res_blocks = 2
    config.model.attention_levels = (1,)  # 14 x 14
    config.model.num_heads = 4
    config.model.num_groups = 32

    config.train.loss = "dsm"
    config.train.num_steps = 50_000
    config.train.batch_size = 128
    config.train.ema_decay = 0.9999
    config.train.log_every = 200
    config.optimizer.lr = 2e-4
    config.optimizer.warmup_steps = 1000
    config.optimizer.grad_clip = 1.0
    config.checkpoint.every_steps = 5000

    config.eval.every_steps = 10_000
    config.eval.batch_size = 256
    config.eval.max_batches = 8
    config.eval.num_time_samples = 1
    config.eval.likelihood = "elbo"

    config.sample.sampler = "dpm_solver_pp_2m"
    config.sample.num_steps = 50
    config.sample.num_samples = 64
    config.sample.every_steps = 10_000
    config.sample.num_print = 1
    return config
