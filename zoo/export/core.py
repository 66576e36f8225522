"""`export()`: check the request, convert, verify against Keras, move into place."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zoo.errors import ConfigError, ModelFileError
from zoo.export import formats
from zoo.export.graph import (
    INPUT_DTYPES,
    ExportError,
    Signature,
    export_model,
    failing_layer,
    first_line,
    is_float32,
    reference_outputs,
    serving_function,
    signature_for,
    static_blockers,
    trace_or_explain,
)
from zoo.export.verify import compare, probe_images, representative_images
from zoo.saving import clone

log = logging.getLogger("zoo.export")

ALIASES = {"tflite": "litert"}
CALIBRATION_SAMPLES = 32


@dataclass
class ExportResult:
    """What `export` wrote and how it compared with the Keras model on the probe images.

    Attributes:
        path: the artifact (a SavedModel directory, a `.tflite` or an `.onnx` file).
        format: "saved_model", "litert" or "onnx".
        quantize: None (float32), "float16", "int8" or "int8-full".
        signature: inputs and outputs of the artifact (`zoo.export.Signature`).
        logits_error: max |logits - Keras| / max(1, max |Keras logits|) for float32 artifacts,
            RMS error relative to the logits' RMS for quantized ones.
        mask_agreement: fraction of probe pixels whose mask equals Keras'.
        attempts: conversions needed (a failed verification converts again).
        notes: choices made for the caller (e.g. the input size read from the model).
    """

    path: Path
    format: str
    quantize: str | None
    signature: Signature
    logits_error: float
    mask_agreement: float
    attempts: int
    notes: list[str] = field(default_factory=list)


def _bad(name: str, value: Any, expected: str) -> ConfigError:
    return ConfigError(
        f"Invalid value for argument `{name}`: expected {expected}. Received: {name}={value!r}"
    )


def check_format(format: Any) -> str:
    fmt = ALIASES.get(format, format)
    if fmt not in formats.FORMATS:
        raise _bad("format", format, f"one of {', '.join(formats.FORMATS)}")
    return fmt


def check_quantize(format: str, quantize: Any) -> str | None:
    quantize = None if quantize in (None, "none", "float32") else quantize
    allowed = formats.QUANTIZATIONS[format]
    if quantize not in allowed:
        choices = ", ".join("none" if q is None else q for q in allowed)
        raise _bad("quantize", quantize, f"one of {choices} for format {format!r}")
    return quantize


def parse_input_size(value: Any) -> tuple[int, int] | str | None:
    """None, "dynamic", or (height, width) from a pair or a "HxW" string."""
    if value is None or value == "dynamic":
        return value
    size = value
    if isinstance(value, str):
        parts = value.lower().split("x")
        size = tuple(int(p) for p in parts) if all(p.strip().isdigit() for p in parts) else None
    ok = isinstance(size, (list, tuple)) and len(size) == 2
    if not ok or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in size):
        raise _bad("input_size", value, '"dynamic", "HxW" or a (height, width) pair of ints')
    return (int(size[0]), int(size[1]))


def resolve_input_size(
    model: Any, format: str, requested: tuple[int, int] | str | None, notes: list[str]
) -> tuple[int, int] | None:
    """The static (height, width) of the export, or None for any size."""
    if requested == "dynamic" and format == "litert":
        raise _bad("input_size", requested, "a fixed HxW for LiteRT (its converter needs one)")
    if requested is None and format == "litert":
        recorded = (getattr(model, "metadata", {}) or {}).get("image_size")
        if not recorded:
            raise ConfigError(
                "Invalid value for argument `input_size`: LiteRT needs a fixed input size and "
                "the model records no training size (metadata['image_size']); pass "
                "input_size=(H, W) (--input-size HxW). Received: input_size=None"
            )
        requested = (int(recorded[0]), int(recorded[1]))
        note = (
            f"LiteRT input size {requested[0]}x{requested[1]}: the training size recorded in "
            "the model (choose another with --input-size HxW)"
        )
        notes.append(note)
        log.info(note)
    if requested in (None, "dynamic"):
        return None
    d = int(model.divisor)
    if requested[0] % d or requested[1] % d:
        raise ConfigError(
            f"Invalid value for argument `input_size`: height and width must be multiples of "
            f"{d} for this model (a fixed size is not padded; use a dynamic size to pad "
            f"inside the signature). Received: input_size={requested[0]}x{requested[1]}"
        )
    return requested


def default_path(model_path: str | os.PathLike, format: str, quantize: str | None) -> Path:
    """`run/model.keras` -> run/model_saved_model, run/model.tflite, run/model_int8.tflite..."""
    stem = Path(model_path).with_suffix("")
    tag = "" if quantize is None else f"_{quantize.replace('-', '_')}"
    if format == "saved_model":
        return Path(f"{stem}{tag}_saved_model")
    return Path(f"{stem}{tag}{formats.SUFFIXES[format]}")


def load_segmentation_model(path: str | os.PathLike) -> Any:
    """A zoo segmentation model from a `.keras` file; anything else fails with one line."""
    from zoo.models.base import SegmentationModel
    from zoo.saving import load_model

    model = load_model(path)
    if not isinstance(model, SegmentationModel):
        raise ModelFileError(
            f"Invalid value for argument `model`: {path} holds a {type(model).__name__} "
            f"({model.name!r}), not a zoo segmentation model; export the inference model a "
            f"run saves as model.keras. Received: model={str(path)!r}"
        )
    return model


def export(
    model: Any,
    path: str | os.PathLike | None = None,
    format: str = "saved_model",
    quantize: str | None = None,
    input_size: tuple[int, int] | str | None = None,
    *,
    input_dtype: str = "uint8",
    threshold: float | None = None,
    representative_data: Any = None,
    calibration_samples: int = CALIBRATION_SAMPLES,
    overwrite: bool = False,
    retries: int = 2,
) -> ExportResult:
    """Export a segmentation model to SavedModel, LiteRT or ONNX, verified against Keras.

    The artifact maps ``image`` (uint8 0..255 or float32 0..1, (B, H, W, C)) to ``logits``,
    ``probabilities`` and ``mask`` (docs/export.md). It is converted into a temporary path,
    run once on probe images and compared with the Keras model; a mismatch converts again
    (at most `retries` more times), then raises `ExportError`. Only a verified artifact is
    moved to `path`; nothing is left behind otherwise.

    Args:
        model: a zoo segmentation model, or the path of its `.keras` file.
        path: where to write; default next to a `.keras` file (`model_saved_model/`,
            `model.tflite`, `model_int8.tflite`, `model.onnx`).
        format: "saved_model", "litert" (alias "tflite") or "onnx".
        quantize: None (float32); "float16" (saved_model, litert); "int8" (LiteRT dynamic
            range) or "int8-full" (LiteRT integer kernels, calibrated on
            `representative_data`).
        input_size: "dynamic" (any size; the default for SavedModel and ONNX), (H, W) or
            "HxW". LiteRT needs a fixed size: default the training size in
            ``model.metadata["image_size"]``.
        input_dtype: "uint8" or "float32" images.
        threshold: sigmoid cut for binary/multilabel masks (default: the model's metadata
            "threshold", else 0.5).
        representative_data: images for int8-full calibration: an array (N, H, W, C), an
            iterable of arrays, or a data config (mapping or YAML path, as in conf/data/)
            whose training images are drawn.
        calibration_samples: images used for int8-full calibration.
        overwrite: replace an existing artifact at `path`.
        retries: extra conversions after a failed verification.

    Returns:
        `ExportResult`.

    Example:

    ```python
    result = zoo.export.export(model, "run/model.onnx", format="onnx")
    ```
    """
    notes: list[str] = []
    fmt = check_format(format)
    quantize = check_quantize(fmt, quantize)
    if input_dtype not in INPUT_DTYPES:
        raise _bad("input_dtype", input_dtype, f"one of {', '.join(INPUT_DTYPES)}")
    requested = parse_input_size(input_size)
    if isinstance(model, (str, os.PathLike)):
        model_path = model
        if path is None:
            path = default_path(model_path, fmt, quantize)
        model = load_segmentation_model(model_path)
    else:
        from zoo.models.base import SegmentationModel

        if not isinstance(model, SegmentationModel):
            raise _bad("model", type(model).__name__, "a zoo segmentation model or a .keras path")
        if path is None:
            raise _bad("path", None, "the output path (needed when `model` is a model object)")
    path = Path(path)
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (--overwrite) to replace it")
    size = resolve_input_size(model, fmt, requested, notes)
    missing = formats.missing_modules(fmt)
    if missing:
        raise ImportError(
            f"Exporting to {fmt} needs {', '.join(missing)}: pip install 'segzoo[export]'"
        )
    what = f"{model.name} to {fmt}" + (f" ({quantize})" if quantize else "")
    blockers = static_blockers(model, dynamic=size is None)
    if blockers:
        raise ExportError(f"Cannot export {what} at a dynamic input size: layer {blockers[0]}")
    sig = signature_for(
        model, input_dtype, size, batch_size=1 if fmt == "litert" else None, threshold=threshold
    )
    calibration = None
    if quantize == "int8-full":
        calibration = representative_images(
            representative_data, sig, calibration_samples, what=what
        )
    reference_model = model if is_float32(model) else clone(model, "float32")
    probe = probe_images(sig, calibration)
    expected = reference_outputs(reference_model, probe, sig)

    # TensorFlow runs the training path itself (fused batch norm, folded transposed
    # convolution: faster in TF, and the same ops as Keras); converters get the export paths.
    exported = export_model(
        model,
        size,
        "float16" if fmt == "saved_model" and quantize else "float32",
        export_paths=fmt != "saved_model",
    )
    serve = serving_function(exported, sig)
    concrete = trace_or_explain(serve, exported, what)
    last = ""
    for attempt in range(1, retries + 2):
        tmp = _temporary_path(path)
        try:
            try:
                _convert(fmt, quantize, serve, concrete, exported, tmp, calibration, sig)
            except ExportError:
                raise
            except Exception as err:  # noqa: BLE001 - converter errors become one line
                layer = failing_layer(err, exported)
                where = f" (layer {layer})" if layer else ""
                raise ExportError(f"Cannot export {what}{where}: {first_line(err)}") from err
            try:
                outputs = formats.load_runner(tmp, fmt)(probe)
            except Exception as err:  # noqa: BLE001 - the runtime rejects the artifact
                layer = failing_layer(err, exported)
                where = f" (layer {layer})" if layer else ""
                raise ExportError(
                    f"Cannot run the exported {what}{where}: {first_line(err)}"
                ) from err
            error, agreement, problem = compare(outputs, expected, sig, fmt, quantize)
            if problem is None:
                _move_into_place(tmp, path, overwrite)
                log.info("Wrote %s (%s; verified: logits error %.2g)", path, what, error)
                return ExportResult(path, fmt, quantize, sig, error, agreement, attempt, notes)
            last = problem
            log.warning("Export %s attempt %d failed verification: %s", what, attempt, problem)
        finally:
            _remove(tmp)
    raise ExportError(
        f"Export {what} failed verification {retries + 1} times, nothing written: {last}"
    )


def _convert(fmt, quantize, serve, concrete, exported, tmp, calibration, sig) -> None:
    if fmt == "saved_model":
        formats.write_saved_model(serve, exported, tmp)
    elif fmt == "onnx":
        formats.write_onnx(serve, tmp)
    else:

        def representative():
            for image in calibration:  # float32 in [0, 1]
                if sig.input_dtype == "uint8":
                    image = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
                yield [image[None]]

        formats.write_litert(serve, exported, tmp, quantize, representative)


def _temporary_path(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-")) / path.name


def _remove(tmp: Path) -> None:
    """Remove the temporary directory holding `tmp` (after a move, it is empty)."""
    shutil.rmtree(tmp.parent, ignore_errors=True)


def _move_into_place(tmp: Path, path: Path, overwrite: bool) -> None:
    """Rename `tmp` to `path` (same file system); an existing artifact is replaced only when
    asked, and only after the new one is complete."""
    old = None
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise FileExistsError(f"{path} exists; pass overwrite=True (--overwrite)")
        if tmp.is_file() and path.is_file():
            os.replace(tmp, path)  # one atomic step for files
            return
        old = tmp.parent / f"{path.name}.old"
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
