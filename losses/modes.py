"""The label modes every loss term is defined for (see docs/losses.md).

- `"binary"`: `y_pred` has 1 channel (sigmoid), `y_true` holds 0/1 (B, H, W, 1).
- `"multiclass"`: `y_pred` has C channels (softmax), `y_true` holds class ids (B, H, W, 1).
- `"multilabel"`: `y_pred` has C channels (sigmoid each), `y_true` holds 0/1 (B, H, W, C);
  `ignore_index` applies per element.
"""

from __future__ import annotations

from collections.abc import Sequence

BINARY = "binary"
MULTICLASS = "multiclass"
MULTILABEL = "multilabel"
MODES = (BINARY, MULTICLASS, MULTILABEL)


def validate_mode(mode: str, allowed: Sequence[str] = MODES, term: str = "loss") -> str:
    """`mode` if it is one of `allowed`, else a one-line `ValueError` naming the choices."""
    if mode not in allowed:
        raise ValueError(
            f"Invalid value for argument `mode` of {term}: expected one of {list(allowed)}. "
            f"Received: mode={mode!r}"
        )
    return mode
