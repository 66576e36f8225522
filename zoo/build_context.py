"""How a model is being built: restored from a saved file, or for export.

* `restoring_from_file()`: `SegmentationModel.from_config` rebuilds a model inside it; the
  saved weights follow, so encoder weight sources (`encoder_weights`, an adapter's
  `weights="imagenet"`, a file path) are skipped: a saved model loads from its own file only,
  offline too.
* `exporting()`: layers created inside it take their export path (`zoo.export`).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

_RESTORING = threading.local()
_EXPORTING = threading.local()


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


@contextlib.contextmanager
def exporting() -> Iterator[None]:
    """Layers created within this block take their export path (`zoo.export`).

    Some layers compute their function with ops that train fast but that converters cannot
    take (a run-time assertion, TF's raw fused batch norm, a transposed convolution whose
    output shape is computed at run time). Created inside this block they set
    ``export_mode = True`` and compute the same function with plain, convertible ops.
    `zoo.export` rebuilds the model from its config inside it; nothing else should need it.
    """
    previous = getattr(_EXPORTING, "active", False)
    _EXPORTING.active = True
    try:
        yield
    finally:
        _EXPORTING.active = previous


def is_exporting() -> bool:
    """True inside `exporting()`."""
    return getattr(_EXPORTING, "active", False)
