"""Durations such as `trainer.time_budget=3m`: parsing, formatting, the one-line error."""

from __future__ import annotations

import math
import re

from zoo.errors import ConfigError

_DURATION = re.compile(
    r"^\s*(?:(?P<h>\d+(?:\.\d+)?)\s*h)?\s*(?:(?P<m>\d+(?:\.\d+)?)\s*m(?:in)?)?"
    r"\s*(?:(?P<s>\d+(?:\.\d+)?)\s*s)?\s*$",
    re.IGNORECASE,
)
DURATION_FORMS = "90s, 3m, 1h, 1h30m or 2m30s (a bare number means seconds)"


class BudgetError(ConfigError):
    """A time budget that cannot work (bad string, or too short for one training step).

    A `zoo.errors.UserError` (and a `ValueError`): train.py prints it as one line. The string
    is checked before anything is built; "too short" is known only after the warm-up steps.
    """


def parse_duration(value: str | float | int, key: str = "trainer.time_budget") -> float:
    """Seconds of a duration such as ``"90s"``, ``"3m"``, ``"1h"``, ``"1h30m"`` or ``120``.

    Args:
        value: a string with h / m (or min) / s parts in that order, or a number of seconds.
        key: the config key named in the error message.

    Returns:
        The duration in seconds (> 0).

    Raises:
        BudgetError: anything else, in one line naming the value and the accepted forms.

    Example:
        >>> parse_duration("1h30m")
        5400.0
    """
    seconds: float | None = None
    if isinstance(value, bool):
        seconds = None
    elif isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION.match(value)
        if match and any(match.group(g) for g in "hms"):
            parts = {g: float(match.group(g) or 0) for g in "hms"}
            seconds = parts["h"] * 3600 + parts["m"] * 60 + parts["s"]
        elif value.strip():
            try:
                seconds = float(value)
            except ValueError:
                seconds = None
    if seconds is None or not math.isfinite(seconds) or seconds <= 0:
        raise BudgetError(
            f"Invalid value for {key}: expected a positive duration such as {DURATION_FORMS}. "
            f"Received: {key}={value!r}"
        )
    return seconds


def format_duration(seconds: float) -> str:
    """``5400 -> "1h30m"``, ``90 -> "1m30s"``, ``7.5 -> "7.5s"`` (inverse of `parse_duration`)."""
    if seconds < 60:
        return f"{seconds:g}s"
    whole = int(round(seconds))
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    return "".join(f"{v}{u}" for v, u in ((h, "h"), (m, "m"), (s, "s")) if v)
