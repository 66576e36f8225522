"""Option checks of the loss terms: each term file declares a table `{option: check}`.

The table's keys are the keyword options of the term's pure function (besides `mode` and
`ignore_index`), whose signature gives the defaults; its values are the checks below. A check
turns a user value into the stored one (floats as floats, sequences as lists) or raises one
line, ``Invalid value for argument `x` of loss 'term': expected ... Received: x=...``. Options
sized by the logits' channels (`classes`, `class_weights`) also have `fits`, run once the
channel count is known.

Example (the table of `losses/focal.py`; `focal(..., alpha=0.25, gamma=2.0,
normalization="weighted")` gives the defaults):

```python
OPTIONS = {"alpha": OrNone(fraction), "gamma": non_negative, "normalization": OneOf(NORMALIZATIONS)}
```
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def invalid(term: str, key: str, value: Any, expected: str) -> ValueError:
    """The one-line error for option `key` of loss `term`."""
    return ValueError(
        f"Invalid value for argument `{key}` of loss '{term}': expected {expected}. "
        f"Received: {key}={value!r}"
    )


class Check:
    """How one option is checked: ``check(term, key, value)`` returns the value to store.

    Subclasses set `expected` (what valid values are, for the message) and `convert` (raises
    `TypeError` or `ValueError` for an invalid value).
    """

    expected = "a valid value"

    def convert(self, value: Any) -> Any:
        return value

    def fits(self, term: str, key: str, value: Any, num_classes: int | None) -> None:
        """One-line `ValueError` if `value` does not fit logits with `num_classes` channels."""

    def __call__(self, term: str, key: str, value: Any) -> Any:
        try:
            return self.convert(value)
        except (TypeError, ValueError):
            raise invalid(term, key, value, self.expected) from None


class Number(Check):
    """A finite number in `[low, high]` (`(low, high]` with `open_low`), stored as float."""

    def __init__(self, low: float = 0.0, high: float = math.inf, *, open_low: bool = False):
        self.low, self.high, self.open_low = low, high, open_low
        bound = f"{'>' if open_low else '>='} {low}"
        if high < math.inf:
            bound += f" and <= {high}"
        self.expected = f"a finite number {bound}"

    def convert(self, value: Any) -> float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        ok = ok and math.isfinite(value) and value <= self.high
        if not (ok and (value > self.low if self.open_low else value >= self.low)):
            raise ValueError(value)
        return float(value)


class OneOf(Check):
    """One of a few choices."""

    def __init__(self, choices: Sequence[Any]) -> None:
        self.choices = tuple(choices)
        self.expected = f"one of {list(self.choices)}"

    def convert(self, value: Any) -> Any:
        if value not in self.choices:
            raise ValueError(value)
        return value


class OrNone(Check):
    """None, or a value that passes `check`."""

    def __init__(self, check: Check) -> None:
        self.check = check
        self.expected = f"None or {check.expected}"

    def convert(self, value: Any) -> Any:
        return None if value is None else self.check.convert(value)

    def fits(self, term: str, key: str, value: Any, num_classes: int | None) -> None:
        if value is not None:
            self.check.fits(term, key, value, num_classes)


class ClassIndices(Check):
    """A non-empty list of channel indices (stored as a list of ints)."""

    expected = "a non-empty list of class indices >= 0"

    def convert(self, value: Any) -> list[int]:
        if isinstance(value, str | bytes) or not isinstance(value, Sequence) or not value:
            raise ValueError(value)
        if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in value):
            raise ValueError(value)
        return [int(c) for c in value]

    def fits(self, term: str, key: str, value: Any, num_classes: int | None) -> None:
        check_class_options(term, num_classes, classes=value)


class ClassWeights(Check):
    """One finite weight >= 0 per class (stored as a list of floats)."""

    expected = "a list of finite weights >= 0, one per class"

    def convert(self, value: Any) -> list[float]:
        if isinstance(value, str | bytes | Mapping):
            raise ValueError(value)
        weights = [float(c) for c in value]
        if not weights or not all(math.isfinite(c) and c >= 0 for c in weights):
            raise ValueError(value)
        return weights

    def fits(self, term: str, key: str, value: Any, num_classes: int | None) -> None:
        check_class_options(term, num_classes, class_weights=value)


class Flag(Check):
    """True or False (not 0 / 1 or a string: a YAML `"false"` would read as true)."""

    expected = "True or False"

    def convert(self, value: Any) -> bool:
        if type(value).__name__ not in ("bool", "bool_"):
            raise ValueError(value)
        return bool(value)


flag = Flag()
positive = Number(0.0, open_low=True)
non_negative = Number(0.0)
fraction = Number(0.0, 1.0)


def check_class_options(
    term: str,
    num_classes: int | None,
    *,
    class_weights: Sequence[float] | None = None,
    classes: Sequence[int] | None = None,
) -> None:
    """One-line `ValueError` if `class_weights` / `classes` do not fit `num_classes` channels."""
    if num_classes is None:
        return
    if class_weights is not None and len(class_weights) != num_classes:
        raise ValueError(
            f"Invalid value for argument `class_weights` of loss {term!r}: expected one weight "
            f"per class, {num_classes} for logits with {num_classes} channels. Received: "
            f"class_weights={list(class_weights)} ({len(class_weights)} weights)"
        )
    if classes is not None and any(not 0 <= c < num_classes for c in classes):
        raise ValueError(
            f"Invalid value for argument `classes` of loss {term!r}: expected channel indices "
            f"0..{num_classes - 1} (the logits have {num_classes} channels). Received: "
            f"classes={list(classes)}"
        )


# --------------------------------------------------------------------------- a term's options


def option_defaults(fn: Callable[..., Any]) -> dict[str, Any]:
    """Keyword options (and defaults) of a term's pure function, except mode/ignore_index."""
    return {
        p.name: p.default
        for p in inspect.signature(fn).parameters.values()
        if p.kind is p.KEYWORD_ONLY and p.name not in ("mode", "ignore_index")
    }


def check_table(term: str, fn: Callable[..., Any], table: Mapping[str, Check]) -> None:
    """At registration: the table checks exactly the options of `fn`, and accepts its defaults."""
    defaults = option_defaults(fn)
    if set(table) != set(defaults):
        raise TypeError(
            f"The option table of loss '{term}' must list the keyword options of "
            f"{fn.__qualname__}: {sorted(defaults)}. Received: {sorted(table)}"
        )
    for key, check in table.items():
        check(term, key, defaults[key])


def take_options(
    term: str, fn: Callable[..., Any], table: Mapping[str, Check], kwargs: dict[str, Any]
) -> dict[str, Any]:
    """Pop the options of `fn` out of `kwargs` (defaults filled in), each checked by `table`.

    Options without a check in `table` (terms registered without one) are taken as given.
    """
    options = {k: kwargs.pop(k, v) for k, v in option_defaults(fn).items()}
    return {k: table[k](term, k, v) if k in table else v for k, v in options.items()}


def refuse_unknown(
    term: str, fn: Callable[..., Any], kwargs: Mapping[str, Any], allowed: Sequence[str]
) -> None:
    """One-line `ValueError` for keys of `kwargs` that are neither options nor `allowed`."""
    unknown = [k for k in kwargs if k not in allowed]
    if unknown:
        valid = ["mode", "ignore_index", *option_defaults(fn)]
        raise ValueError(f"Unknown option(s) {unknown} for loss '{term}'. Valid options: {valid}")


def check_ignore_index(term: str, ignore_index: Any) -> None:
    """`ignore_index` must be None or an integer mask value."""
    if ignore_index is not None and (
        isinstance(ignore_index, bool) or not isinstance(ignore_index, int)
    ):
        raise invalid(term, "ignore_index", ignore_index, "None or an integer class id")
