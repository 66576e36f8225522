"""How a model is being built: restored from a saved file, or for export.

* `restoring_from_file()`: `SegmentationModel.from_config` rebuilds a model inside it; the
  saved weights follow, so encoder weight sources (`encoder_weights`, an adapter's
  `weights="imagenet"`, a file path) are skipped: a saved model loads from its own file only,
  offline too.
* `exporting()`: layers created inside it take their export path (`zoo.export`).
* `shapes_only()`: models built inside it get variables with shapes and no values, for
  counting parameters and reading shapes without drawing or allocating any weight.
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


@contextlib.contextmanager
def shapes_only() -> Iterator[None]:
    """Within this block variables are created with their shapes and dtypes only.

    No initializer runs and no weight memory is allocated: ``count_params()``, variable shapes
    and output shapes are available, the weights are not (a model built here cannot compute).
    Counting ResNeXt-101 32x48d's 827M parameters takes a fraction of a second.

    `keras.StatelessScope()` alone defers the initializers to its exit, so it would still draw
    every weight; with ``initialize_variables=False`` the deferred variables would stay on
    Keras' global list and be drawn at the next scope's exit. This block leaves the list as it
    found it.

    Example:

    ```python
    with shapes_only():
        model = zoo.create_model("unet", encoder="resnext101_32x48d", num_classes=1)
    print(model.count_params())
    ```
    """
    import keras

    # Keras keeps the variables awaiting initialization in its global state (no public API).
    from keras.src.backend.common import global_state

    pending = list(global_state.get_global_attribute("uninitialized_variables") or [])
    try:
        with keras.StatelessScope(initialize_variables=False):
            yield
    finally:
        global_state.set_global_attribute("uninitialized_variables", pending)
