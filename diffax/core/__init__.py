"""Shared building blocks: pytree dataclasses, registries, argument checks, vocab-chunked CE."""

from diffax.core.compilation import (
    default_cache_dir,
    disable_compilation_cache,
    enable_compilation_cache,
)
from diffax.core.cross_entropy import LinearHead, chunked_cross_entropy, head_logits
from diffax.core.pytree import pytree_dataclass, static_field
from diffax.core.registry import Registry
from diffax.core.validation import (
    UnknownOptionError,
    batch_time,
    check_choice,
    check_finite,
    check_ndim,
    check_number,
    check_options,
    check_ordered,
    check_positive_int,
    check_shape,
    check_time,
    check_time_grid,
    check_time_range,
    check_tokens,
    is_concrete,
)

__all__ = [
    "LinearHead",
    "Registry",
    "UnknownOptionError",
    "batch_time",
    "check_choice",
    "check_finite",
    "check_ndim",
    "check_number",
    "check_options",
    "check_ordered",
    "check_positive_int",
    "check_shape",
    "check_time",
    "check_time_grid",
    "check_time_range",
    "check_tokens",
    "chunked_cross_entropy",
    "default_cache_dir",
    "disable_compilation_cache",
    "enable_compilation_cache",
    "head_logits",
    "is_concrete",
    "pytree_dataclass",
    "static_field",
]
