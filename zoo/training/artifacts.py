"""`trainer.export`: deployment artifacts written next to model.keras at the end of a run.

Each requested artifact (`zoo.config.exports`) is converted by `zoo.export.export` from the
float32 model that was just saved as model.keras, verified against it on probe images (as
`python -m zoo.export` does) and moved into place under the name `zoo.export.default_path`
gives (`model_saved_model/`, `model.onnx`, `model.tflite`, `model_int8.tflite`, ...). LiteRT
takes the training size (rounded up to the model's divisor); int8-full is calibrated on
images of the run's own training stream. A rerun of a finished run replaces them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zoo.config.exports import ExportRequest

log = logging.getLogger("zoo")


def training_images(stream: Any, samples: int) -> np.ndarray:
    """The first `samples` images of a training stream (batches of dicts) as float32."""
    images, count = [], 0
    for batch in stream:
        images.append(np.asarray(batch["image"], np.float32))
        count += len(images[-1])
        if count >= samples:
            break
    return np.concatenate(images)[:samples]


def export_size(model: Any, image_size: Sequence[int]) -> tuple[int, int]:
    """The fixed input size of a LiteRT export: the training size, rounded up to a multiple
    of the model's divisor (a `pad_to_divisor` model may train on other sizes)."""
    d = int(model.divisor)
    return (-(-int(image_size[0]) // d) * d, -(-int(image_size[1]) // d) * d)


def write_artifacts(
    model: Any,
    model_path: Path,
    requests: Sequence[ExportRequest],
    image_size: Sequence[int],
    calibration: Callable[[int], np.ndarray],
) -> tuple[dict[str, Any], BaseException | None]:
    """Export `model` (saved at `model_path`) in every requested format.

    Every artifact is tried, also after one failed; the caller writes the run's other
    outputs and then raises the first error.

    Args:
        model: the float32 inference model that was saved as `model_path`.
        model_path: the run's model.keras (the artifacts go next to it).
        requests: what `trainer.export` asks for.
        image_size: the training size (LiteRT's fixed input size).
        calibration: samples -> float32 training images (int8-full).

    Returns:
        ({entry: {"path", "seconds", "logits_error", "mask_agreement"} or {"error"}}, the
        first error or None).
    """
    from zoo import export as zexport

    results: dict[str, Any] = {}
    first: BaseException | None = None
    for request in requests:
        path = zexport.default_path(model_path, request.format, request.quantize)
        started = time.perf_counter()
        try:
            result = zexport.export(
                model,
                path,
                format=request.format,
                quantize=request.quantize,
                input_size=export_size(model, image_size) if request.format == "litert" else None,
                representative_data=(
                    calibration(zexport.core.CALIBRATION_SAMPLES)
                    if request.quantize == "int8-full"
                    else None
                ),
                overwrite=True,  # the run owns its directory; model.keras was replaced too
            )
        except Exception as err:  # noqa: BLE001 - recorded in metrics.json, raised by the caller
            log.error("Export %s failed: %s", request.label, err)
            results[request.label] = {"error": str(err)}
            first = first or err
            continue
        seconds = time.perf_counter() - started
        results[request.label] = {
            "path": path.name,
            "seconds": round(seconds, 2),
            "logits_error": float(result.logits_error),
            "mask_agreement": float(result.mask_agreement),
        }
        log.info(
            "Exported %s to %s in %.1f s (verified: logits error %.2g)",
            request.label, path, seconds, result.logits_error,
        )  # fmt: skip
    return results, first
