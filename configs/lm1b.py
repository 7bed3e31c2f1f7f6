"""LM1B (One Billion Word) with masked diffusion through `tfds.data_source`, GPU/TPU sized.

Prepare the dataset once (needs TensorFlow and network, any machine):
    tfds build lm1b --data_dir=/data/tfds --file_format=array_record
then
python -m experiments.main --config=configs/lm1b.py --workdir=W --config.data.data_dir=/data/tfds

Byte-level tokens (256 ids), one sentence per length-128 sequence, padded with spaces. A subword
tokenizer plugs in by registering it in `diffax.data.tokenizers` and setting data.tokenizer.
"""

from configs import base


def get_config():
    config = base.get_config()
    config.data.source = "tfds"
    config.data.dataset = "lm1b"
    config.data.data_dir = "~/tensorflow_datasets"
    config.data.train_split = "train"
    config.data.eval_split = "test"
    config.data.tokenizer = "byte"
    config.data.seq_len = 128
    config.data.num_workers = 4
    config.model.dim = 768
    config.model.depth = 12
    config.model.num_heads = 12
    config.model.dtype = "bfloat16"
    config.optimizer.lr = 3e-4
    config.optimizer.warmup_steps = 2500
    config.train.num_steps = 1_000_000
    config.train.batch_size = 512
    config.train.ema_decay = 0.9999
    config.train.log_every = 500
    config.checkpoint.every_steps = 5000
    config.checkpoint.keep_every = 100_000
    config.eval.every_steps = 50_000
    config.eval.batch_size = 256
    config.eval.max_batches = 64
    config.sample.num_steps = 128
    return config
