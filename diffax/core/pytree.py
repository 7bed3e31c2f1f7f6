"""Frozen dataclasses that are JAX pytrees.

Processes, schedules and solvers are small immutable objects that must pass through `jax.jit`,
`jax.vmap` and `lax.scan`. Array-valued fields become pytree leaves (they can be traced); fields
declared with `static_field()` (vocabulary sizes, step counts, names) are part of the tree
structure and therefore compile-time constants.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

import jax

T = TypeVar("T")


def static_field(**kwargs: Any) -> Any:
    """A dataclass field that is static (part of the treedef, hashed by `jit`), not a leaf."""
    metadata = dict(kwargs.pop("metadata", {}) or {})
    metadata["static"] = True
    return dataclasses.field(metadata=metadata, **kwargs)


def pytree_dataclass(cls: type[T]) -> type[T]:
    """Decorator: a frozen dataclass registered with `jax.tree_util.register_dataclass`.

    Fields created with `static_field()` are metadata; every other field is a pytree leaf.
    """
    cls = dataclasses.dataclass(frozen=True)(cls)
    fields = dataclasses.fields(cls)
    data = [f.name for f in fields if not f.metadata.get("static", False)]
    meta = [f.name for f in fields if f.metadata.get("static", False)]
    return jax.tree_util.register_dataclass(cls, data_fields=data, meta_fields=meta)
