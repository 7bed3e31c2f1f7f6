"""Flax NNX networks for diffusion: a DiT-style token transformer, a U-Net, a time MLP."""

from diffax.nn.block_models import bd3_block_model, fast_dllm_model, two_stream_fn
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
    KVCache,
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
    "KVCache",
    "TimeMLP",
    "UNet",
    "bd3_block_model",
    "fast_dllm_model",
    "layer_norm",
    "parameter_counts",
    "remat_policy",
    "rotary",
    "sinusoidal_embedding",
    "stack_blocks",
    "two_stream_fn",
    "unstack_blocks",
]
