"""Sampler options from a config: `sample.options` plus `sample.temperature` / `sample.top_p`.

`sample.options` is a string of comma-separated `keyword=literal` pairs, written as the keyword
arguments of a Python call: `"eta=0.5, strategy='cap'"`, `"block_length=16"`, `"s_churn=1.0"`.
A string (not a sub-dict) so that the locked base config declares the key once and every
sampler's keywords can be set from a config file and from the command line alike
(`--config.sample.options="eta=0.5"`). Each option is checked against the sampler's own keywords
(`sampler_options(name)` of the task's half) before anything is written.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from typing import Any

from diffax.core.validation import check_options

_EXAMPLE = "\"eta=0.5, strategy='cap'\""
# Dedicated keys kept for the most common options; passed only when not neutral, since not
# every sampler takes them.
_DEDICATED = (("temperature", 1.0), ("top_p", 1.0))


def parse_options(text: str, key: str = "sample.options") -> dict[str, Any]:
    """`"eta=0.5, strategy='cap'"` -> `{"eta": 0.5, "strategy": "cap"}` ("" -> {}).

    Values are Python literals (numbers, strings, booleans, None, tuples).

    Raises:
      ValueError: not a list of keyword=literal pairs, or a keyword given twice.
    """
    if not isinstance(text, str):
        raise ValueError(f"{key}={text!r} is not allowed; allowed values: a string like {_EXAMPLE}")
    if not text.strip():
        return {}
    try:
        call = ast.parse(f"f({text})", mode="eval").body
        if not isinstance(call, ast.Call) or call.args:
            raise ValueError("positional value")
        options = {}
        for keyword in call.keywords:
            if keyword.arg is None:
                raise ValueError("** is not a keyword")
            if keyword.arg in options:
                raise ValueError(f"{keyword.arg!r} is given twice")
            options[keyword.arg] = ast.literal_eval(keyword.value)
    except (SyntaxError, ValueError) as e:
        reason = e.msg if isinstance(e, SyntaxError) else str(e)
        raise ValueError(
            f"{key}={text!r} is not allowed ({reason}); allowed values: comma-separated "
            f"keyword=literal pairs, e.g. {_EXAMPLE}"
        ) from None
    return options


def sample_options(sample, sampler_options: Callable[[str], tuple[str, ...]]) -> dict[str, Any]:
    """The keyword options `sample(...)` gets from the `sample` config section.

    `sample.options`, plus `temperature` / `top_p` from their own keys when these differ from
    1.0, all checked against the keywords of `sample.sampler`.

    Args:
      sample: the `sample` config section (`sampler`, `options`, `temperature`, `top_p`).
      sampler_options: the half's `sampler_options(name)` (`diffax.discrete.sampler_options`
        or `diffax.continuous.sampler_options`): every keyword a sampler accepts.

    Raises:
      ValueError: an unknown `sample.sampler`, a malformed `sample.options`, an option set
        twice, or one the sampler does not accept (`UnknownOptionError`, listing the allowed
        ones).
    """
    try:
        allowed = tuple(sampler_options(sample.sampler))
    except ValueError as e:
        raise ValueError(f"sample.sampler={sample.sampler!r} is not allowed: {e}") from None
    options = parse_options(sample.options)
    for name, neutral in _DEDICATED:
        value = sample[name]
        if value == neutral:
            continue
        if name in options:
            raise ValueError(
                f"sample.{name}={value!r} and sample.options={sample.options!r} both set "
                f"{name!r}; set it in one place"
            )
        options[name] = value
    check_options(
        options,
        allowed,
        f"sampler {sample.sampler!r} (config: sample.options, sample.temperature, sample.top_p)",
    )
    return options
