"""Rebuilding a saved model: weight sources named in its config are not read again.

`SegmentationModel.from_config` rebuilds a model inside `restoring_from_file()`; the saved
weights follow, so encoder weight sources (`encoder_weights`, an adapter's `weights="imagenet"`,
a file path) are skipped: a saved model loads from its own file only, offline too.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

_RESTORING = threading.local()


@contextlib.contextmanager
def restoring_from_file() -> Iterator[None]:
    """Within this block models are rebuilt to receive saved weights (`from_config`).

    Weight sources named in a config (`encoder_weights`, an adapter's `weights="imagenet"`) are
    not read: a saved model loads from its own file only, offline too.
    """
    previous = getattr(_RESTORING, "active", False)
    _RESTORING.active = True
    try:
        yield
    finally:
        _RESTORING.active = previous


def is_restoring() -> bool:
    """True inside `restoring_from_file()`."""
    return getattr(_RESTORING, "active", False)
