"""`export()`: check the request, convert, verify against Keras, move into place."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zoo.export import formats
from zoo.export.graph import (
    INPUT_DTYPES,
    OUTPUT_NAMES,
    ExportError,
    Signature,
    export_model,
    failing_layer,
    first_line,
    float32_copy,
    is_float32,
    reference_outputs,
    serving_function,
    signature_for,
    static_blockers,
    trace_or_explain,
)

log = logging.getLogger("zoo.export")

ALIASES = {"tflite": "litert"}
# Verification on the probe images. Float32 formats: max |logits - Keras| / max(1, max |Keras|).
# Quantized ones: root-mean-square error relative to the logits' RMS, and mask agreement.
FLOAT_TOLERANCE = {"saved_model": 1e-5, "onnx": 1e-4, "litert": 1e-4}
QUANT_TOLERANCE = {"float16": (0.02, 0.99), "int8": (0.25, 0.9), "int8-full": (0.35, 0.85)}
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


def _bad(name: str, value: Any, expected: str) -> ValueError:
    return ValueError(
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
            raise ValueError(
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
        raise ValueError(
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
        raise ValueError(
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
    reference_model = model if is_float32(model) else float32_copy(model)
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


def compare(
    outputs: Mapping[str, np.ndarray],
    expected: Mapping[str, np.ndarray],
    sig: Signature,
    fmt: str,
    quantize: str | None,
) -> tuple[float, float, str | None]:
    """(logits error, mask agreement, the first problem or None) of an artifact's outputs."""
    if sorted(outputs) != sorted(OUTPUT_NAMES):
        return np.inf, 0.0, f"outputs {sorted(outputs)}, expected {sorted(OUTPUT_NAMES)}"
    for name in OUTPUT_NAMES:
        got, want = np.asarray(outputs[name]), expected[name]
        if got.shape != want.shape or got.dtype != want.dtype:
            return (
                np.inf,
                0.0,
                f"output {name!r} is {got.dtype}{list(got.shape)}, "
                f"expected {want.dtype}{list(want.shape)}",
            )
    logits, want = np.asarray(outputs["logits"], np.float64), expected["logits"].astype(np.float64)
    if not np.all(np.isfinite(logits)):
        return np.inf, 0.0, "non-finite logits"
    agreement = float(np.mean(outputs["mask"] == expected["mask"]))
    if quantize is None:
        error = float(np.max(np.abs(logits - want)) / max(1.0, float(np.max(np.abs(want)))))
        if error > FLOAT_TOLERANCE[fmt]:
            return (
                error,
                agreement,
                f"logits differ from Keras by {error:.3g} (> {FLOAT_TOLERANCE[fmt]})",
            )
        clear = _clearly_decided(expected, sig)
        if np.any((outputs["mask"] != expected["mask"])[clear]):
            return error, agreement, "mask differs from Keras where the logits agree"
        return error, agreement, None
    scale = max(float(np.sqrt(np.mean(want**2))), 1e-6)
    error = float(np.sqrt(np.mean((logits - want) ** 2)) / scale)
    max_error, min_agreement = QUANT_TOLERANCE[quantize]
    if error > max_error:
        return error, agreement, f"logits RMS error {error:.3g} of their RMS (> {max_error})"
    if agreement < min_agreement:
        return error, agreement, f"mask agrees on {agreement:.3f} of pixels (< {min_agreement})"
    return error, agreement, None


def _clearly_decided(expected: Mapping[str, np.ndarray], sig: Signature) -> np.ndarray:
    """Pixels whose mask no rounding can flip (shaped like the mask)."""
    probabilities = expected["probabilities"]
    if sig.mode == "multiclass":
        top2 = np.sort(expected["logits"], axis=-1)[..., -2:]
        return (top2[..., 1] - top2[..., 0]) > 1e-3
    clear = np.abs(probabilities - sig.threshold) > 1e-4
    return clear[..., 0] if sig.mode == "binary" else clear


def probe_images(sig: Signature, calibration: np.ndarray | None = None) -> np.ndarray:
    """Images the artifact is verified on: calibration images when there are some, else
    built-in shapes images; at a dynamic size a batch of 2 whose size needs padding."""
    if sig.input_size is not None:
        size, batch = sig.input_size, sig.batch_size or 2
    else:
        d = sig.divisor
        size, batch = (2 * d + 3, 3 * d - 5 if d > 5 else 3 * d + 1), 2
    if calibration is not None and tuple(calibration.shape[1:3]) == tuple(size):
        images = calibration[:batch]
    else:
        from zoo.data import generate_shapes

        images = generate_shapes(batch, size, seed=20170, split="val").images
        images = images.astype(np.float32) / 255.0
    channels = sig.channels
    if images.shape[-1] != channels:
        images = np.resize(images.transpose(3, 0, 1, 2), (channels, *images.shape[:3]))
        images = images.transpose(1, 2, 3, 0)
    if sig.input_dtype == "uint8":
        return np.clip(np.round(images * 255.0), 0, 255).astype(np.uint8)
    return images.astype(np.float32)


def representative_images(data: Any, sig: Signature, samples: int, what: str) -> np.ndarray:
    """float32 [0, 1] images (N, H, W, C) at the export size for int8-full calibration."""
    import tensorflow as tf

    if data is None:
        raise ValueError(
            f"Invalid value for argument `representative_data`: int8-full ({what}) calibrates "
            "on training images: pass a data config (--data conf/data/NAME.yaml) or images. "
            "Received: representative_data=None"
        )
    if isinstance(data, (str, os.PathLike)) or isinstance(data, Mapping):
        images = _config_images(data, samples)
    else:
        arrays = [np.asarray(a) for a in (data if isinstance(data, Iterable) else [data])]
        images = np.concatenate([a if a.ndim == 4 else a[None] for a in arrays])[:samples]
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / 255.0
    images = images.astype(np.float32)
    if tuple(images.shape[1:3]) != tuple(sig.input_size):
        images = tf.image.resize(images, sig.input_size, method="bilinear").numpy()
    return images


def _config_images(data: Any, samples: int) -> np.ndarray:
    from omegaconf import OmegaConf

    from zoo.data import build_datasets

    if isinstance(data, (str, os.PathLike)):
        cfg = OmegaConf.to_container(OmegaConf.load(str(data)), resolve=True)
        cfg = cfg.get("data", cfg)  # a run's config.yaml or a conf/data/NAME.yaml
        cfg = {k: v for k, v in cfg.items() if k != "defaults"}
    else:
        cfg = dict(data)
    batch = max(1, min(samples, 16))
    bundle = build_datasets(cfg, global_batch_size=batch, seed=0)
    images = []
    for example in bundle.train.take(-(-samples // batch)):
        images.append(example["image"].numpy())
    return np.concatenate(images)[:samples]


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
