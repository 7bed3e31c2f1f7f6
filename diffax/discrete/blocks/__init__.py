"""Block diffusion and block-wise decoding of diffusion language models.

* `block_masked_elbo`: the BD3-LM negative ELBO (masked diffusion inside blocks, autoregressive
  across blocks), one network pass over the two-stream input `[x_t ; x_0]`.
* `block_sample`: block-by-block generation with a block-causal model and a KV cache of the clean
  prefix (`BlockModel`), prompts, and EOS-terminated any-length generation.
* `semi_ar_sample`: semi-autoregressive decoding of a full-attention model (LLaDA) with
  Fast-dLLM's approximate prefix / dual caches (`CachedModel`).
* `BlockModel` / `CachedModel`: the plain-callable protocols of cached models, and their exact
  uncached references `uncached_block_model` / `full_cached_model`.
"""

from diffax.discrete.blocks.loss import (
    block_masked_bound_with_log_z,
    block_masked_elbo,
    block_times,
    check_block_size,
)
from diffax.discrete.blocks.models import (
    BlockModel,
    CachedModel,
    full_cached_model,
    per_block_two_stream,
    per_token_time,
    uncached_block_model,
)
from diffax.discrete.blocks.sample import block_sample
from diffax.discrete.blocks.semi_ar import CACHE_MODES, semi_ar_sample

__all__ = [
    "CACHE_MODES",
    "semi_ar_sample",
    "BlockModel",
    "CachedModel",
    "block_masked_bound_with_log_z",
    "block_masked_elbo",
    "block_sample",
    "block_times",
    "check_block_size",
    "full_cached_model",
    "per_block_two_stream",
    "per_token_time",
    "uncached_block_model",
]
