"""Continuous diffusion on CIFAR-10 with the DDPM U-Net (GPU/TPU sized).

  tfds build cifar10 --data_dir=$TFDS_DATA_DIR --file_format=array_record
  python -m experiments.main --config=configs/cifar10.py --workdir=/tmp/diffax_cifar10 \
      --config.data.data_dir=$TFDS_DATA_DIR

The network follows Ho et al. 2020 (base 128 channels, multipliers (1, 2, 2, 2), 2 blocks per level,
attention at 16 x 16; 35.7M parameters) without dropout; DDPM trained 800k steps at batch 128.
Evaluation reports the continuous-time ELBO in bits/dim with uniform dequantization.
"""

from configs import mnist


def get_config():
    config = mnist.get_config()
    config.data.dataset = "cifar10"

    config.model.dim = 128
    config.model.channel_mults = (1, 2, 2, 2)  # 32 -> 16 -> 8 -> 4
    config.model.num_res_blocks = 2
    config.model.attention_levels = (1,)  # 16 x 16
    config.model.num_heads = 1

    config.train.num_steps = 400_000
    config.train.batch_size = 128
    config.optimizer.lr = 2e-4
    config.optimizer.warmup_steps = 5000
    config.checkpoint.every_steps = 10_000

    config.eval.every_steps = 50_000
    config.eval.max_batches = 20
    config.sample.every_steps = 50_000
    return config
