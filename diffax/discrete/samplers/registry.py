"""The sampler registry: names of the built-in sampler factories (and yours).

A sampler factory binds a sampler's hyper-parameters and returns a `Step`
(`ancestral()`, `remdm(eta=0.1)`, `pc(predictor=euler())`). `register_sampler(name)` adds a
factory to `SAMPLERS`, so `diffax.discrete.sample(..., sampler=name, **options)` can build it from
options, and makes an unknown keyword an `UnknownOptionError` (a `ValueError` that is also a
`TypeError`) listing the factory's options.
"""

from __future__ import annotations

from collections.abc import Callable

from diffax.core.registry import Registry, factory_options
from diffax.discrete.samplers.step import Step

SAMPLERS: Registry[Step] = Registry("sampler")
#: Lower-case alias of `SAMPLERS`, kept for existing code.
samplers = SAMPLERS


def register_sampler(name: str) -> Callable[[Callable[..., Step]], Callable[..., Step]]:
    """Decorator: registers a `Step` factory under `name`, checking option names on every call."""
    return SAMPLERS.register_factory(name)


__all__ = ["SAMPLERS", "factory_options", "register_sampler", "samplers"]
