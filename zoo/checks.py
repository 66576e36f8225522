"""Argument checks shared by layers, encoders and models, with Keras-style messages.

Each raises `ValueError("Invalid value for argument `name`: expected ... Received: name=...")`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _bad(name: str, expected: str, value: Any) -> ValueError:
    return ValueError(
        f"Invalid value for argument `{name}`: expected {expected}. Received: {name}={value!r}"
    )


def check_positive_int(name: str, value: Any, hint: str = "") -> int:
    """`value` if it is a positive int (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _bad(name, f"a positive integer{hint}", value)
    return value


def check_positive(name: str, value: Any) -> float:
    """`value` if it is a positive number (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise _bad(name, "a positive number", value)
    return value


def check_rate(name: str, value: Any) -> float:
    """`value` if it is a rate in [0, 1) (dropout and the like)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise _bad(name, "a rate in [0, 1)", value)
    return value


def check_bool(name: str, value: Any) -> bool:
    """`value` if it is True or False."""
    if not isinstance(value, bool):
        raise _bad(name, "True or False", value)
    return value


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """`value` if it is one of `choices` (a bool never passes for an int choice)."""
    if isinstance(value, bool) != isinstance(choices[0], bool) or value not in choices:
        raise _bad(name, f"one of {tuple(choices)}", value)
    return value


def check_positive_ints(name: str, values: Any, count: int) -> tuple[int, ...]:
    """`values` if it is a list or tuple of `count` positive ints (e.g. atrous rates)."""
    ok = isinstance(values, (list, tuple)) and len(values) == count
    if not ok or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
        raise _bad(name, f"{count} positive integers", values)
    return tuple(values)
