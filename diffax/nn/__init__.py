"""Flax NNX networks for diffusion: a DiT-style token transformer (more in later modules)."""

from diffax.nn.layers import Dense, Embed, layer_norm, rotary, sinusoidal_embedding
from diffax.nn.transformer import DiffusionTransformer

__all__ = [
    "Dense",
    "DiffusionTransformer",
    "Embed",
    "layer_norm",
    "rotary",
    "sinusoidal_embedding",
]
