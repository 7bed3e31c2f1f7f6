"""`SAMPLERS`: sampler names -> factories returning a `Step` (score_sde's registry pattern).

`register_sampler(name)` adds a factory; calling it with an unknown keyword is an
`UnknownOptionError` listing its options. Defaults such as the grid or `t_min` live on the `Step`.
"""

from __future__ import annotations

from collections.abc import Callable

from diffax.continuous.samplers.step import Step
from diffax.core.registry import Registry, factory_options

Factory = Callable[..., Step]

SAMPLERS: Registry[Step] = Registry("sampler")


def register_sampler(name: str) -> Callable[[Factory], Factory]:
    """Decorator: registers a factory `(**hyper_parameters) -> Step` under `name` (checked)."""
    return SAMPLERS.register_factory(name)


__all__ = ["SAMPLERS", "Factory", "factory_options", "register_sampler"]
