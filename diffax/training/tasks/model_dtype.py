"""The network's compute dtype from its config name (`model.dtype`)."""

from __future__ import annotations

import jax.numpy as jnp

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(name: str):
    """The jnp dtype for `model.dtype` ("float32" or "bfloat16")."""
    if name not in _DTYPES:
        raise ValueError(
            f"model.dtype={name!r} is not allowed; allowed values: {', '.join(_DTYPES)}"
        )
    return _DTYPES[name]
