"""Weightings and time samplers given by name: their factory, its options, strict checking.

Library functions take objects (`weightings.edm(sigma_data=0.5)`); a name (from a config) is
looked up once here and its options are bound through the factory. An option that the named
factory does not take is an error that lists the ones it does.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable

from diffax.core import Registry
from diffax.core.validation import UnknownOptionError, check_options


def option_names(
    registry: Registry, value: object, aliases: dict[str, dict[str, str]], argument: str
) -> dict[str, str]:
    """`{option name: factory parameter}` accepted with `value`; empty for an object.

    The option name is the factory's keyword parameter, or its alias from `aliases[name]`.
    """
    if not isinstance(value, str):
        return {}
    factory = registry.get(value, argument)
    renamed = {param: option for option, param in aliases.get(value, {}).items()}
    params = inspect.signature(factory).parameters
    return {renamed.get(p, p): p for p in params}


def check_named_options(options: Iterable[str], allowed: Iterable[str], owner: str) -> None:
    """`check_options`, saying "none" when nothing is allowed."""
    allowed = list(allowed)
    if allowed:
        check_options(options, allowed, owner)
    elif options := list(options):
        raise UnknownOptionError(
            f"unknown option{'s' if len(options) > 1 else ''} {', '.join(map(repr, options))} "
            f"for {owner}; it takes no options"
        )


def build(
    registry: Registry,
    value: object,
    argument: str,
    options: dict,
    aliases: dict[str, dict[str, str]],
    kind: type,
) -> object:
    """The object for `value`: a name's factory called with `options`, or `value` itself.

    `options` must be among `option_names(...)` (checked by the caller); with an object there may
    be none. A `ValueError` from the factory is re-raised naming the options as given.
    """
    if isinstance(value, kind):
        check_named_options(options, (), f"{argument}={value!r} (an object binds its own)")
        return value
    if not isinstance(value, str):
        raise TypeError(
            f"{argument} must be a {kind.__name__} or one of the names "
            f"{', '.join(registry.names())}; got {value!r}"
        )
    names = option_names(registry, value, aliases, argument)
    check_named_options(options, names, f"{argument}={value!r}")
    try:
        return registry.get(value, argument)(**{names[k]: v for k, v in options.items()})
    except ValueError as err:
        given = ", ".join(f"{k}={v!r}" for k, v in options.items())
        raise ValueError(f"{argument}={value!r} with {given}: {err}") from err
