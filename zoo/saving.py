"""Safe loading of saved models: `.keras` files only, always with `safe_mode=True`.

`safe_mode=True` makes Keras refuse to deserialize Lambda layers (arbitrary Python bytecode);
we turn that refusal into one clear message. Legacy `.h5` files are not offered: their loader
has no safe mode. Keras is pinned (pyproject.toml) to releases with the known safe_mode bypasses
fixed (CVE-2025-1550, CVE-2025-8747, CVE-2025-9905, CVE-2026-1462): keras>=3.14.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import keras

from zoo.errors import MissingFileError, ModelFileError


class UnsafeModelError(ModelFileError):
    """The file asks for code execution (e.g. a Lambda layer) and was refused."""


def load_model(path: str | os.PathLike, compile: bool = False) -> Any:
    """Load a `.keras` model safely; our classes need no `custom_objects` (import zoo first).

    Args:
        path: a `.keras` file.
        compile: also restore the training configuration (off by default: inference).

    Raises:
        MissingFileError: no such file.
        ModelFileError: not a `.keras` file, a damaged one, or one that cannot be rebuilt.
        UnsafeModelError: the file contains a Lambda layer or other code and was refused.
    """
    import losses  # noqa: F401  (registers the loss layers of wrapped training models)
    import zoo  # noqa: F401  (registers model and layer classes)

    path = Path(path)
    if path.suffix != ".keras":
        raise ModelFileError(
            f"Refusing to load {path}: only .keras files are supported (legacy .h5/SavedModel "
            "loading has no safe mode); re-save the model with model.save('model.keras')"
        )
    if not path.is_file():
        raise MissingFileError(f"No model file at {path}")
    if not zipfile.is_zipfile(path):
        raise ModelFileError(
            f"Cannot load {path}: it is not a .keras archive (damaged, truncated or another "
            "format); use the model.keras written by train.py"
        )
    try:
        return keras.saving.load_model(path, compile=compile, safe_mode=True)
    except ValueError as err:
        text = str(err)
        if "Lambda" in text or "safe_mode" in text or "unsafe" in text.lower():
            raise UnsafeModelError(
                f"Refusing to load {path}: it contains a Lambda layer (arbitrary code); "
                "only models built from registered layers load."
            ) from None
        raise ModelFileError(f"Cannot load {path}: {_first_line(text)}") from err
    except (zipfile.BadZipFile, KeyError, OSError, TypeError) as err:
        raise ModelFileError(
            f"Cannot load {path}: {type(err).__name__}: {_first_line(str(err))} (damaged file, or "
            "written by an incompatible version)"
        ) from err


def _first_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0][:300]


def load_segmentation_model(path: str | os.PathLike) -> Any:
    """`load_model`, then check it is an image -> per-pixel logits model.

    Raises:
        ModelFileError: the file holds another kind of model (names what it found).
    """
    model = load_model(path)
    inputs, outputs = getattr(model, "inputs", None) or [], getattr(model, "outputs", None) or []
    if len(inputs) != 1 or len(outputs) != 1 or len(inputs[0].shape) != 4:
        raise ModelFileError(
            f"{path} is not a segmentation model: expected one image input (B, H, W, C) and one "
            f"per-pixel output; found inputs {[tuple(t.shape) for t in inputs]}"
        )
    if len(outputs[0].shape) != 4:
        raise ModelFileError(
            f"{path} is not a segmentation model: its output has shape "
            f"{tuple(outputs[0].shape)}, expected per-pixel logits (B, H, W, classes)"
        )
    return model


def clone(model: Any, policy: str = "float32") -> Any:
    """A copy of `model` built under dtype `policy`, outside any distribution strategy.

    The copy has the same weights and metadata; what runs after training (evaluation, overlays,
    export) uses it, so it needs no collective ops of a multi-worker strategy and is float32
    even when the run trained in mixed precision. The copy of a deep-supervised model is the
    inference model: built with ``deep_supervision=False`` (only the full-resolution output;
    the auxiliary heads train, they are not saved).
    """
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(policy)
    try:
        config = model.get_config()
        if config.get("deep_supervision"):
            config["deep_supervision"] = False
        copy = model.__class__.from_config(config)
        copy_weights(model, copy)
    finally:
        keras.mixed_precision.set_dtype_policy(previous)
    return copy


def copy_weights(source: Any, target: Any) -> None:
    """Assign `source`'s weights to `target`: all of them, or (`target` the inference model of
    a deep-supervised `source`) those of every layer of `target`, found by name."""
    if len(source.outputs) == len(target.outputs):
        target.set_weights(source.get_weights())
        return
    for layer in target.layers:
        if layer.weights:
            layer.set_weights(source.get_layer(layer.name).get_weights())


def inference_model(model: Any, cache: Any = None) -> Any:
    """`model` itself, or for a deep-supervised model a single-output copy with its current
    weights (under the current dtype policy): what a `.keras` file of it should hold.

    Args:
        model: a zoo model.
        cache: a copy returned by an earlier call for the same `model`, refreshed in place
            instead of built again.
    """
    if len(model.outputs) == 1:
        return model
    if cache is None:
        return clone(model, keras.mixed_precision.dtype_policy().name)
    copy_weights(model, cache)
    cache.metadata = dict(getattr(model, "metadata", {}))
    return cache
