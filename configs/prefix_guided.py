"""Prefix-conditioned masked diffusion with classifier-free guidance on the built-in corpus.

The first 16 of 64 characters are the condition (never noised, not in the loss); 10% of training
sequences drop it (masked prefix), so the network is also unconditional. Evaluation reports the
ELBO of the 48 continuation characters given the prefix; samples continue held-out prefixes with
guidance weight 1.5. CPU-sized like the quick start (~5 minutes on a 2-core CPU).

python -m experiments.main --config=configs/prefix_guided.py --workdir=/tmp/diffax_prefix_guided
"""

from configs import quickstart


def get_config():
    config = quickstart.get_config()
    config.discrete.cond_prefix = 16
    config.discrete.cond_dropout = 0.1
    config.sample.guidance_scale = 1.5
    return config
