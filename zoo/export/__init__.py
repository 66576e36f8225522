"""Export zoo models to SavedModel, LiteRT (float32, float16, int8) and ONNX (docs/export.md).

    python -m zoo.export --model run/model.keras --format onnx

or from Python::

    result = zoo.export.export(model, "model.onnx", format="onnx")

Every artifact takes uint8 (or float32) images and returns ``logits``, ``probabilities`` and
``mask``; it is verified against the Keras model before it is written.
"""

from zoo.export.core import (
    ExportResult,
    check_format,
    check_quantize,
    default_path,
    export,
    load_segmentation_model,
    parse_input_size,
)
from zoo.export.formats import FORMATS, QUANTIZATIONS, load_runner, missing_modules
from zoo.export.graph import (
    OUTPUT_NAMES,
    ExportError,
    Signature,
    export_model,
    reference_outputs,
    serving_function,
    signature_for,
)

__all__ = [
    "FORMATS",
    "OUTPUT_NAMES",
    "QUANTIZATIONS",
    "ExportError",
    "ExportResult",
    "Signature",
    "check_format",
    "check_quantize",
    "default_path",
    "export",
    "export_model",
    "load_runner",
    "load_segmentation_model",
    "missing_modules",
    "parse_input_size",
    "reference_outputs",
    "serving_function",
    "signature_for",
]
