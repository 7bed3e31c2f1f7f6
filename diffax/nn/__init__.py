"""Flax NNX networks for diffusion: a DiT-style token transformer, a U-Net, a time MLP."""

from diffax.nn.layers import (
    Dense,
    Einsum,
    Embed,
    layer_norm,
    remat_policy,
    rotary,
    sinusoidal_embedding,
)
from diffax.nn.mlp import TimeMLP
from diffax.nn.transformer import (
    DiffusionTransformer,
    parameter_counts,
    stack_blocks,
    unstack_blocks,
)
from diffax.nn.unet import UNet

__all__ = [
    "Dense",
    "DiffusionTransformer",
    "Einsum",
    "Embed",
    "TimeMLP",
    "UNet",
    "layer_norm",
    "parameter_counts",
    "remat_policy",
    "rotary",
    "sinusoidal_embedding",
    "stack_blocks",
    "unstack_blocks",
]
