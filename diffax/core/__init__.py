"""Shared building blocks: pytree dataclasses, registries, argument checks."""

from diffax.core.pytree import pytree_dataclass, static_field
from diffax.core.registry import Registry
from diffax.core.validation import (
    batch_time,
    check_choice,
    check_positive_int,
    check_shape,
    check_time,
    check_tokens,
    is_concrete,
)

__all__ = [
    "Registry",
    "batch_time",
    "check_choice",
    "check_positive_int",
    "check_shape",
    "check_time",
    "check_tokens",
    "is_concrete",
    "pytree_dataclass",
    "static_field",
]
