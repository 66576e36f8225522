"""Command line: ``python -m zoo.export --model run/model.keras --format onnx`` (docs/export.md).

Bad input (format, quantization, size, output path, model file) is reported in one line
before the model is loaded or anything is converted; exit code 2. A failed conversion or
verification exits with 1 and leaves nothing behind.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from zoo.errors import MissingDependencyError, MissingFileError, OutputError, UserError
from zoo.export import core, formats


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m zoo.export",
        description="Export a zoo segmentation model (.keras) to SavedModel, LiteRT or ONNX, "
        "verified against the Keras model.",
    )
    p.add_argument("--model", required=True, help="the .keras file (a run's model.keras)")
    p.add_argument("--format", required=True, help=f"one of {', '.join(formats.FORMATS)}")
    p.add_argument(
        "--quantize",
        default=None,
        help="float16 (saved_model, litert), int8 or int8-full (litert); default float32",
    )
    p.add_argument(
        "--input-size",
        default=None,
        help="HxW (e.g. 512x512) or 'dynamic'; default dynamic (SavedModel, ONNX) or the "
        "training size recorded in the model (LiteRT)",
    )
    p.add_argument("--out", default=None, help="output path (default: next to the model)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--input-dtype", default="uint8", help="uint8 (default) or float32 images")
    p.add_argument("--threshold", type=float, default=None, help="binary/multilabel cut")
    p.add_argument(
        "--data",
        default=None,
        help="data config (conf/data/NAME.yaml or a run's config.yaml) whose training images "
        "calibrate int8-full; default: config.yaml next to the model",
    )
    p.add_argument("--calibration-samples", type=int, default=core.CALIBRATION_SAMPLES)
    return p


def _check_request(args: argparse.Namespace) -> tuple[str, str | None, object, Path, Path]:
    """Everything that can be checked without loading the model (ValueError: one line)."""
    fmt = core.check_format(args.format)
    quantize = core.check_quantize(fmt, args.quantize)
    size = core.parse_input_size(args.input_size)
    if args.input_dtype not in ("uint8", "float32"):
        raise core._bad("input_dtype", args.input_dtype, "one of uint8, float32")
    model_path = Path(args.model)
    if model_path.suffix != ".keras":
        raise core._bad("model", str(model_path), "a .keras file")
    if not model_path.is_file():
        raise MissingFileError(f"No model file at {model_path}")
    out = Path(args.out) if args.out else core.default_path(model_path, fmt, quantize)
    if (out.exists() or out.is_symlink()) and not args.overwrite:
        raise OutputError(f"{out} exists; pass --overwrite to replace it")
    missing = formats.missing_modules(fmt)
    if missing:
        raise MissingDependencyError(
            f"Exporting to {fmt} needs {', '.join(missing)}: pip install 'segzoo[export]'"
        )
    return fmt, quantize, size, model_path, out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    logging.getLogger("zoo.export").setLevel(logging.INFO)  # choices made, verification
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        fmt, quantize, size, model_path, out = _check_request(args)
        data = args.data
        if data is None and quantize == "int8-full":
            candidate = model_path.parent / "config.yaml"
            data = candidate if candidate.is_file() else None
        model = core.load_segmentation_model(model_path)
        result = core.export(
            model,
            out,
            format=fmt,
            quantize=quantize,
            input_size=size,
            input_dtype=args.input_dtype,
            threshold=args.threshold,
            representative_data=data,
            calibration_samples=args.calibration_samples,
            overwrite=args.overwrite,
        )
    except UserError as err:  # bad input, or a conversion that failed verification
        print(f"Error: {err}", file=sys.stderr)
        return 1
    sig = result.signature
    shape = "x".join("?" if d is None else str(d) for d in sig.input_shape())
    print(
        f"{result.path}: {result.format}"
        + (f" ({result.quantize})" if result.quantize else "")
        + f", input image {sig.input_dtype}[{shape}], outputs logits, probabilities, mask "
        f"({sig.mode}); verified against Keras (logits error {result.logits_error:.2g}, "
        f"mask agreement {result.mask_agreement:.4f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
