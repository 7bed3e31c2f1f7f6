"""Masked diffusion (MDLM/MD4 objective) on tinyshakespeare, character level (65 symbols).

The file is not part of diffax; point data.path at any UTF-8 text:
python -m experiments.main --config=configs/shakespeare_masked.py --workdir=W \
    --config.data.path=../shared/data/tinyshakespeare.txt
"""

from configs import base


def get_config():
    config = base.get_config()
    config.data.source = "text_file"
    config.data.path = "../shared/data/tinyshakespeare.txt"
    config.data.tokenizer = "char"
    config.data.seq_len = 128
    config.model.dim = 256
    config.model.depth = 6
    config.model.num_heads = 8
    config.train.num_steps = 20_000
    config.train.batch_size = 64
    config.optimizer.lr = 1e-3
    config.optimizer.warmup_steps = 1000
    config.train.ema_decay = 0.999
    config.checkpoint.every_steps = 2000
    config.eval.every_steps = 5000
    config.sample.num_steps = 128
    # ReMDM remasking (Wang et al. 2025): revealed tokens may be remasked with probability
    # min(eta, sigma_max), which lets later steps correct earlier ones.
    config.sample.sampler = "remdm"
    config.sample.options = "eta=0.02, strategy='cap'"
    return config
