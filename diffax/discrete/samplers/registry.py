"""The sampler registry, the shared signature and the default time grid.

Every sampler has the signature
`sampler(key, process, model_fn, shape, *, num_steps, prediction="denoiser", temperature=1.0,
top_p=1.0, cache=False, fixed_tokens=None, fixed_mask=None, **specific) -> (tokens, info)`
where `model_fn(tokens [B, L] int32, t [B]) -> [B, L, V]` and `info["nfe"]` (int32) counts the
network evaluations actually made. Samplers are registered with `register_sampler`, which makes
an unknown keyword option an `UnknownOptionError` (a `ValueError` that is also a `TypeError`)
listing the options the sampler accepts, whether it is called directly, through
`samplers.get(name)` or through `diffax.discrete.sample`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from diffax.core import Registry
from diffax.core.validation import check_options

samplers: Registry = Registry("sampler")

#: Arguments every sampler takes positionally; the rest are its options.
POSITIONAL = ("key", "process", "model_fn", "shape")


def sampler_options(fn: Callable[..., Any]) -> list[str]:
    """The keyword options a (registered) sampler accepts, in signature order."""
    return [p for p in inspect.signature(fn).parameters if p not in POSITIONAL]


def register_sampler(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: registers a sampler under `name`, checking option names on every call."""

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        parameters = inspect.signature(fn).parameters
        allowed = sampler_options(fn)

        @functools.wraps(fn)
        def checked(*args, **kwargs):
            check_options([k for k in kwargs if k not in parameters], allowed, f"sampler {name!r}")
            return fn(*args, **kwargs)

        samplers.register(name)(checked)
        return checked

    return decorator


def time_grid(num_steps: int) -> jax.Array:
    """`num_steps + 1` decreasing times 1 = t_0 > ... > t_N = 0. Returns float32 `[N + 1]`.

    Samplers take the step t_i -> t_{i+1} with their own rule for i < N - 1; the last step
    (to t = 0, where reverse rates diverge) draws x_0 from the denoiser.
    """
    return jnp.linspace(1.0, 0.0, num_steps + 1, dtype=jnp.float32)
