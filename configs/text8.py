"""text8 (27 symbols) with masked diffusion, GPU/TPU sized (~90M parameters, length 256).

text8 is one 100 MB file (the first 10^8 bytes of an English Wikipedia dump, already a-z and
space); download it yourself and pass its path. The last 5% is held out (the usual 90/5/5 split's
test part).

python -m experiments.main --config=configs/text8.py --workdir=W --config.data.path=/data/text8
"""

from configs import base


def get_config():
    config = base.get_config()
    config.data.source = "text_file"
    config.data.path = "text8"
    config.data.tokenizer = "text8"
    config.data.seq_len = 256
    config.data.heldout_fraction = 0.05
    config.model.dim = 768
    config.model.depth = 12
    config.model.num_heads = 12
    config.model.dtype = "bfloat16"
    config.optimizer.lr = 3e-4
    config.optimizer.warmup_steps = 2500
    config.optimizer.weight_decay = 0.03
    config.train.num_steps = 500_000
    config.train.batch_size = 512
    config.train.ema_decay = 0.9999
    config.train.log_every = 500
    config.checkpoint.every_steps = 5000
    config.checkpoint.keep_every = 50_000
    config.eval.every_steps = 25_000
    config.eval.batch_size = 256
    config.eval.max_batches = 64
    config.sample.num_steps = 256
    config.sample.every_steps = 25_000
    return config
