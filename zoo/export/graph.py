"""The exported computation: the export copy of a model and the serving function around it.

`export_model` rebuilds a model from its config under the float32 (or mixed_float16) policy
inside `zoo.build_context.exporting()`, so every layer takes its export path, and copies the
weights. `serving_function` wraps it with the preprocessing and the outputs every format
shares; `reference_outputs` computes the same outputs from the original Keras model with
NumPy, independently of that graph, for verification and tests.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from zoo.build_context import exporting, restoring_from_file
from zoo.errors import UserError
from zoo.models.base import SegmentationModel, model_mode

OUTPUT_NAMES = ("logits", "probabilities", "mask")
INPUT_NAME = "image"
INPUT_DTYPES = ("uint8", "float32")


class ExportError(UserError, RuntimeError):
    """An export that could not be completed or verified (one-line message)."""


@dataclass(frozen=True)
class Signature:
    """What the exported signature computes.

    Attributes:
        mode: "binary", "multiclass" or "multilabel" (`zoo.models.base.model_mode`).
        num_classes: channels of the logits.
        channels: channels of the input image.
        divisor: the model's divisor (dynamic sizes are padded up to a multiple of it).
        threshold: sigmoid probability above which a binary/multilabel pixel is on.
        input_dtype: "uint8" (0..255, divided by 255 inside) or "float32" (already [0, 1]).
        input_size: (height, width), or None for any size (padded and cropped inside).
        batch_size: fixed batch size, or None for any.
    """

    mode: str
    num_classes: int
    channels: int
    divisor: int
    threshold: float
    input_dtype: str = "uint8"
    input_size: tuple[int, int] | None = None
    batch_size: int | None = None

    @property
    def mask_dtype(self) -> str:
        return "uint8" if self.num_classes <= 256 else "int32"

    def input_shape(self) -> tuple[int | None, ...]:
        h, w = self.input_size or (None, None)
        return (self.batch_size, h, w, self.channels)

    def output_shapes(self, batch: int, height: int, width: int) -> dict[str, tuple[int, ...]]:
        k = self.num_classes
        mask = (batch, height, width, k) if self.mode == "multilabel" else (batch, height, width)
        return {
            "logits": (batch, height, width, k),
            "probabilities": (batch, height, width, k),
            "mask": mask,
        }


def signature_for(
    model: SegmentationModel,
    input_dtype: str = "uint8",
    input_size: tuple[int, int] | None = None,
    batch_size: int | None = None,
    threshold: float | None = None,
) -> Signature:
    metadata = getattr(model, "metadata", {}) or {}
    mode = model_mode(model)
    if threshold is None:
        threshold = float(metadata.get("threshold", 0.5))
    return Signature(
        mode=mode,
        num_classes=int(model.outputs[0].shape[-1]),
        channels=int(model.inputs[0].shape[-1]),
        divisor=int(model.divisor),
        threshold=float(threshold),
        input_dtype=input_dtype,
        input_size=None if input_size is None else (int(input_size[0]), int(input_size[1])),
        batch_size=batch_size,
    )


def export_model(
    model: SegmentationModel,
    input_size: tuple[int, int] | None = None,
    dtype: str = "float32",
    export_paths: bool = True,
) -> SegmentationModel:
    """`model` rebuilt for export, with the same weights.

    Every layer takes its export path (`zoo.build_context.exporting()`; with ``export_paths=False``
    the training path, which TensorFlow itself runs fine and bit for bit like Keras: the
    SavedModel export), the policy is float32 (or mixed_float16 with ``dtype="float16"``)
    whatever the model was trained in, the output is logits (a built-in final activation is
    left out: the signature applies it) and the input size is `input_size` (None: any).

    Args:
        model: a zoo segmentation model.
        input_size: (height, width) for a static input, or None.
        dtype: "float32" or "float16" (float16 compute, float32 weights and logits).
        export_paths: build the layers' converter-friendly paths.
    """
    config = model.get_config()
    config.pop("metadata", None)
    channels = int(model.inputs[0].shape[-1])
    h, w = input_size or (None, None)
    config["input_shape"] = [h, w, channels]
    if "activation" in config:
        config["activation"] = None
    policy = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy("mixed_float16" if dtype == "float16" else "float32")
    try:
        with exporting() if export_paths else contextlib.nullcontext(), restoring_from_file():
            clone = type(model).from_config(config)
    finally:
        keras.mixed_precision.set_dtype_policy(policy)
    clone.set_weights(model.get_weights())
    clone.metadata = dict(getattr(model, "metadata", {}) or {})
    return clone


def is_float32(model: keras.Model) -> bool:
    return all(
        keras.backend.standardize_dtype(layer.compute_dtype) == "float32"
        for layer in model._flatten_layers(include_self=False, recursive=True)
    )


def serving_function(model: keras.Model, sig: Signature) -> Any:
    """The `tf.function` every format exports: ``image -> {logits, probabilities, mask}``.

    uint8 images are divided by 255 (the training pipeline's scaling); with a dynamic size the
    image is edge-padded (like whole-image `zoo.inference.predict`) to a multiple of the divisor and
    the outputs are cropped back to the input size.
    """
    import tensorflow as tf

    spec = tf.TensorSpec(sig.input_shape(), getattr(tf, sig.input_dtype), name=INPUT_NAME)
    divisor = sig.divisor

    def serve(image):
        x = tf.cast(image, tf.float32)
        if sig.input_dtype == "uint8":
            x = x / 255.0  # a division, like the training pipeline: the same rounding
        if sig.input_size is None:
            h, w = tf.shape(x)[1], tf.shape(x)[2]
            # Edge padding by gathering clipped row/column indices: any pad width, any size.
            rows = tf.minimum(tf.range((h + divisor - 1) // divisor * divisor), h - 1)
            cols = tf.minimum(tf.range((w + divisor - 1) // divisor * divisor), w - 1)
            x = tf.gather(tf.gather(x, rows, axis=1), cols, axis=2)
        logits = tf.cast(model(x, training=False), tf.float32)
        if sig.input_size is None:
            logits = logits[:, :h, :w, :]
        return _heads(logits, sig)

    return tf.function(serve, input_signature=[spec], autograph=False)


def _heads(logits: Any, sig: Signature) -> dict[str, Any]:
    import tensorflow as tf

    mask_dtype = getattr(tf, sig.mask_dtype)
    if sig.mode == "multiclass":
        probabilities = tf.nn.softmax(logits, axis=-1)
        mask = tf.cast(tf.argmax(logits, axis=-1, output_type=tf.int32), mask_dtype)
    else:
        probabilities = tf.sigmoid(logits)
        mask = tf.cast(probabilities > sig.threshold, mask_dtype)
        if sig.mode == "binary":
            mask = mask[..., 0]
    return {
        "logits": tf.identity(logits, name="logits"),
        "probabilities": tf.identity(probabilities, name="probabilities"),
        "mask": tf.identity(mask, name="mask"),
    }


def reference_outputs(model: keras.Model, images: np.ndarray, sig: Signature) -> dict:
    """The signature's outputs computed from the Keras model, in NumPy, outside its graph."""
    images = np.asarray(images)
    x = images.astype(np.float32)
    if sig.input_dtype == "uint8":
        x = x / np.float32(255.0)
    _, h, w, _ = x.shape
    d = sig.divisor
    x = np.pad(x, ((0, 0), (0, -h % d), (0, -w % d), (0, 0)), mode="edge")
    logits = np.asarray(model(x, training=False), np.float32)[:, :h, :w, :]
    if sig.mode == "multiclass":
        e = np.exp(logits - logits.max(-1, keepdims=True))
        probabilities = e / e.sum(-1, keepdims=True)
        mask = np.argmax(logits, -1)
    else:
        probabilities = 1.0 / (1.0 + np.exp(-logits))
        mask = probabilities > sig.threshold
        if sig.mode == "binary":
            mask = mask[..., 0]
    return {
        "logits": logits,
        "probabilities": probabilities.astype(np.float32),
        "mask": mask.astype(sig.mask_dtype),
    }


def trace_or_explain(serve: Any, model: keras.Model, what: str) -> Any:
    """The concrete function of `serve`; a layer that cannot be traced raises one line naming it."""
    try:
        return serve.get_concrete_function()
    except Exception as err:  # noqa: BLE001 - any tracing error becomes one line
        layer = failing_layer(err, model)
        where = f"layer {layer}" if layer else "the model"
        raise ExportError(
            f"Cannot export {what}: {where} fails to trace: {first_line(err)}"
        ) from err


# The informative line of converter and runtime errors, most specific first.
_KEY_LINES = (
    r"'[\w.]+' op is neither a custom op nor a flex op",  # LiteRT converter
    r"No Op registered for [^\n]*",  # ONNX checker / ONNX Runtime
    r"Tensorflow op \[[^\n]*\] is not supported",  # tf2onnx
)


def first_line(err: BaseException | str, limit: int = 300) -> str:
    """One line that says what went wrong in a converter's (often pages long) error."""
    text = _clean(str(err))
    for pattern in _KEY_LINES:
        match = re.search(pattern, text)
        if match:
            return match.group(0)[:limit]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for i, line in enumerate(lines):
        # Keras wraps errors: the meaningful line follows "Exception encountered when calling".
        if line.startswith("Exception encountered when calling") and i + 1 < len(lines):
            return lines[i + 1][:limit]
    for line in lines:
        if re.search(r"error|not supported|unsupported|failed|cannot|invalid", line, re.I):
            return line[:limit]
    return (lines[0] if lines else type(err).__name__)[:limit]


def _clean(line: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", line)


def failing_layer(err: BaseException | str, model: keras.Model) -> str | None:
    """The layer an error message points at: `'name' (Class)`, or None.

    Converters name ops by their graph scope (``model/decoder_upsample/resize/...``); Keras
    names the failing class ("Exception encountered when calling UpSampling2D.call()").
    """
    text = str(err)
    layers = [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if layer.name != INPUT_NAME
    ]
    for layer in sorted(layers, key=lambda la: -len(la.name)):
        if re.search(rf"(^|[/\"'\s(]){re.escape(layer.name)}(_\d+)?/", text):
            return f"'{layer.name}' ({type(layer).__name__})"
    match = re.search(r"when calling (\w+)\.call\(\)", text)
    if match:
        same = [la.name for la in layers if type(la).__name__ == match.group(1)]
        if len(same) == 1:
            return f"'{same[0]}' ({match.group(1)})"
        if same:
            return f"of class {match.group(1)} (one of {', '.join(same)})"
    return None


def static_blockers(model: keras.Model, dynamic: bool) -> list[str]:
    """Layers known not to export at a dynamic size, as `'name' (why)` strings."""
    found = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if dynamic and isinstance(layer, keras.layers.UpSampling2D):
            if layer.interpolation != "nearest":
                found.append(
                    f"'{layer.name}' (keras UpSampling2D(interpolation="
                    f"{layer.interpolation!r}) fails on unknown sizes; build the model with "
                    "zoo.layers.BilinearUpsampling, or export a fixed input size)"
                )
        if type(layer).__name__ == "Lambda":
            found.append(f"'{layer.name}' (Lambda layers are not exported)")
    return found
