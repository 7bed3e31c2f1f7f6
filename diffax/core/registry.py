"""Name registries (score_sde's `@register_predictor` pattern).

A registry maps a string (used in configs and in `sample(..., sampler="euler")`) to an object. The
set is open: users register their own entries. Unknown names raise a `ValueError` that lists the
allowed names.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from diffax.core.validation import check_options

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of objects of one kind (samplers, schedules, processes, ...).

    Args:
      kind: what the registry holds, used in error messages (e.g. "sampler").
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers its argument under `name` and returns it unchanged."""

        def decorator(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            return obj

        return decorator

    def get(self, name: str, argument: str | None = None) -> T:
        """Returns the entry called `name`; a `ValueError` naming the allowed values otherwise."""
        if not isinstance(name, str) or name not in self._entries:
            arg = argument or self.kind
            raise ValueError(
                f"unknown {self.kind} {name!r} for argument {arg!r}; allowed values: "
                f"{', '.join(sorted(self._entries))}"
            )
        return self._entries[name]

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def register_factory(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: registers a factory `(**hyper_parameters) -> object` under `name`.

        The registered (and returned) factory raises an `UnknownOptionError` (a `ValueError` and a
        `TypeError`) listing its keyword options when called with an unknown one, so a factory
        called directly and one built from a name with options check the same way.
        """

        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            allowed = factory_options(factory)

            @functools.wraps(factory)
            def checked(*args, **kwargs) -> T:
                check_options(kwargs, allowed, f"{self.kind} {name!r}")
                return factory(*args, **kwargs)

            self.register(name)(checked)
            return checked

        return decorator


def factory_options(factory: Callable[..., object]) -> tuple[str, ...]:
    """The keyword options of a factory (its hyper-parameters), in signature order."""
    return tuple(inspect.signature(factory).parameters)
