"""Flax NNX networks for diffusion: a DiT-style token transformer, a U-Net, a time MLP."""

from diffax.nn.layers import Dense, Embed, layer_norm, rotary, sinusoidal_embedding
from diffax.nn.mlp import TimeMLP
from diffax.nn.transformer import DiffusionTransformer
from diffax.nn.unet import UNet

__all__ = [
    "Dense",
    "DiffusionTransformer",
    "Embed",
    "TimeMLP",
    "UNet",
    "layer_norm",
    "rotary",
    "sinusoidal_embedding",
]
