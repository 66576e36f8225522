"""Loss specs: ``"0.5*wbce+dice"``, lists, `(weight, term)` pairs and layer objects.

`parse_spec` returns `(weight, name)` pairs; `parse_terms` keeps layer objects, for `attach`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from losses.base import LossLayer
from losses.registry import LOSSES

_SYNTAX = "e.g. 'wbce+dice', '0.5*wbce + 2*dice', ['wbce', 'dice'], [(0.5, 'wbce'), 'dice']"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _spec_error(spec: Any, reason: str) -> ValueError:
    return ValueError(
        f"Invalid loss spec {spec!r}: {reason}. Valid terms: {', '.join(LOSSES.list())} "
        f"({_SYNTAX})."
    )


def _weight(spec: Any, text: Any) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise _spec_error(spec, f"weight {text!r} is not a number") from None
    if isinstance(text, bool) or not math.isfinite(value) or value <= 0:
        raise _spec_error(spec, f"weight {text!r} must be a finite number > 0")
    return value


def _parse_string(spec: Any, text: str) -> list[tuple[float, str]]:
    out = []
    for part in text.split("+"):
        part = part.strip()
        if not part:
            raise _spec_error(spec, f"empty term in {text!r}")
        if "*" in part:
            pieces = [p.strip() for p in part.split("*")]
            if len(pieces) != 2:
                raise _spec_error(spec, f"term {part!r} is not of the form 'weight*name'")
            weight, name = _weight(spec, pieces[0]), pieces[1]
        else:
            weight, name = 1.0, part
        if not _NAME.match(name):
            raise _spec_error(spec, f"term {part!r} is not of the form 'weight*name'")
        if name not in LOSSES:
            raise _spec_error(spec, f"unknown term {name!r}")
        out.append((weight, name))
    return out


def parse_terms(spec: Any) -> list[tuple[float, str | LossLayer]]:
    """`(weight, name or layer)` pairs of `spec`; duplicates of a name merged by adding weights.

    Layer objects stay objects (`attach` uses them as given); see `parse_spec` for the forms.
    """
    if isinstance(spec, str):
        items: list[Any] = [spec]
    elif isinstance(spec, LossLayer):
        items = [spec]
    elif isinstance(spec, Sequence) and not isinstance(spec, bytes) and len(spec) > 0:
        items = list(spec)  # also Hydra's ListConfig
    else:
        raise _spec_error(spec, "expected a string, a term layer or a non-empty list of them")
    pairs: list[tuple[float, str | LossLayer]] = []
    for item in items:
        if isinstance(item, str):
            pairs.extend(_parse_string(spec, item))
        elif isinstance(item, LossLayer):
            pairs.append((1.0, item))
        elif isinstance(item, Sequence) and not isinstance(item, str) and len(item) == 2:
            weight, term = item
            weight = _weight(spec, weight)
            for w, t in parse_terms([term]) if isinstance(term, str | LossLayer) else [(0, None)]:
                if t is None:
                    raise _spec_error(spec, f"{term!r} is not a term name or layer")
                pairs.append((weight * w, t))
        else:
            raise _spec_error(spec, f"{item!r} is not a term name, layer or (weight, term) pair")
    merged: dict[str, list[Any]] = {}
    for weight, term in pairs:
        key = term if isinstance(term, str) else term.name
        if key in merged:
            if not (isinstance(term, str) and isinstance(merged[key][1], str)):
                raise _spec_error(spec, f"two terms are named {key!r}; give layers unique names")
            merged[key][0] += weight
        else:
            merged[key] = [weight, term]
    return [(w, t) for w, t in merged.values()]


def parse_spec(spec: Any) -> list[tuple[float, str]]:
    """Parse a loss spec into `(weight, term name)` pairs, in order of first appearance.

    Accepted: ``"wbce+dice"``, ``"0.5*wbce + 2*dice"``, ``["wbce", "dice"]`` (also Hydra's
    ListConfig), ``[(0.5, "wbce"), "dice"]``, and loss-layer objects (named by `layer.name`).
    A name given twice has its weights added (``"dice+dice"`` is ``"2*dice"``). Unknown terms,
    weights that are not finite numbers > 0 and malformed specs raise one `ValueError` that
    shows the spec and the valid terms.

    Example:

    ```python
    losses.parse_spec("0.5*wbce+dice")  # [(0.5, "wbce"), (1.0, "dice")]
    ```
    """
    return [(w, t if isinstance(t, str) else t.name) for w, t in parse_terms(spec)]
