"""Safe loading of saved models: `.keras` files only, always with `safe_mode=True`.

`safe_mode=True` makes Keras refuse to deserialize Lambda layers (arbitrary Python bytecode);
we turn that refusal into one clear message. Legacy `.h5` files are not offered: their loader
has no safe mode. Keras is pinned (pyproject.toml) to releases with the known safe_mode bypasses
fixed (CVE-2025-1550, CVE-2025-8747, CVE-2025-9905, CVE-2026-1462): keras>=3.14.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras

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


class UnsafeModelError(ValueError):
    """The file asks for code execution (e.g. a Lambda layer) and was refused."""


def load_model(path: str | os.PathLike, compile: bool = False) -> Any:
    """Load a `.keras` model safely; our classes need no `custom_objects` (import zoo first).

    Args:
        path: a `.keras` file.
        compile: also restore the training configuration (off by default: inference).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a `.keras` file.
        UnsafeModelError: the file contains a Lambda layer or other code and was refused.
    """
    import losses  # noqa: F401  (registers the loss layers of wrapped training models)
    import zoo  # noqa: F401  (registers model and layer classes)

    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(
            f"Refusing to load {path}: only .keras files are supported (legacy .h5/SavedModel "
            "loading has no safe mode)."
        )
    if not path.is_file():
        raise FileNotFoundError(f"No model file at {path}")
    try:
        return keras.saving.load_model(path, compile=compile, safe_mode=True)
    except ValueError as err:
        text = str(err)
        if "Lambda" in text or "safe_mode" in text or "unsafe" in text.lower():
            raise UnsafeModelError(
                f"Refusing to load {path}: it contains a Lambda layer (arbitrary code); "
                "only models built from registered layers load."
            ) from None
        raise
