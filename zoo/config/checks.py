"""Value checks shared by the config schemas: numbers in range, choices, annotated types.

Every failure is a `ConfigError` with one line naming the key, the value and what is expected.
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from zoo.errors import ConfigError


def choice(key: str, value: Any, choices: Sequence[Any]) -> None:
    """`value` must be one of `choices`."""
    if value not in choices:
        raise ConfigError(f"Invalid {key}={value!r}; choose one of: {', '.join(map(str, choices))}")


def number(
    key: str,
    value: Any,
    low: float,
    high: float = math.inf,
    *,
    integer: bool = False,
    open_low: bool = False,
    optional: bool = False,
) -> None:
    """`value` must be a finite number (an integer if `integer`) in [low, high] (or (low, high])."""
    if value is None and optional:
        return
    ok = not isinstance(value, bool) and isinstance(value, int | float)
    ok = ok and math.isfinite(value) and (not integer or float(value).is_integer())
    ok = ok and (value > low if open_low else value >= low) and value <= high
    if not ok:
        kind = "an integer" if integer else "a finite number"
        bound = f"> {low:g}" if open_low else f">= {low:g}"
        if high != math.inf:
            bound += f" and <= {high:g}"
        expected = f"{kind} {bound}" + (" or null" if optional else "")
        raise ConfigError(f"Invalid {key}={value!r}; expected {expected}")


def matches(value: Any, hint: Any) -> bool:
    """Whether a plain config value (from YAML or the command line) fits a type annotation."""
    if hint is Any or hint is typing.Any:
        return True
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple, Sequence, typing.Sequence) or hint in (list, tuple):
        if isinstance(value, str | bytes | Mapping) or not isinstance(value, Sequence):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:  # fixed-length tuple
            return len(value) == len(args) and all(map(matches, value, args))
        item = args[0] if args else Any
        return all(matches(v, item) for v in value)
    if origin in (dict, Mapping, typing.Mapping) or hint in (dict, Mapping):
        return isinstance(value, Mapping)
    return isinstance(hint, type) and isinstance(value, hint)


def describe(hint: Any) -> str:
    """A type annotation in words, for messages ("a list of int or null")."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return "any value"
    if origin in (typing.Union, types.UnionType):
        parts = [describe(a) for a in args if a is not type(None)]
        return " or ".join(parts) + (" or null" if type(None) in args else "")
    if origin in (list, tuple, Sequence, typing.Sequence):
        inner = describe(args[0]) if args else "values"
        return f"a list of {inner}"
    if origin in (dict, Mapping, typing.Mapping) or hint in (dict, Mapping):
        return "a mapping"
    return getattr(hint, "__name__", str(hint))
