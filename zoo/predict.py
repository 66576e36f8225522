"""Predict masks for images of any size with a saved model.

    python -m zoo.predict --model outputs/.../model.keras --input my_images/ --output masks/
    python -m zoo.predict --model m.keras --input scene.tif --output out/ --tile 512 \\
        --overlap 0.25 --tta d4 --probabilities --overlays

Images up to twice the training size per side (after the model's input scale) are predicted
whole, larger ones in tiles of the training size (`--tile` sets it, `--tile whole` never
tiles). Binary models write 0/255 masks, multiclass models palette PNGs of class ids,
multilabel models one 0/255 PNG per label (`label_<k>/`); probability maps and overlays on
request. Mask names follow `zoo.outputs.mask_names`; every file is written atomically, strip
by strip (docs/inference.md, "Command line"). Scoring a model is `train.py mode=evaluate`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from zoo.errors import DataError, MissingFileError, OutputError, UserError

log = logging.getLogger("zoo")

FLAGS = {
    "tile": "--tile",
    "overlap": "--overlap",
    "blend": "--blend",
    "batch_size": "--batch-size",
    "tta": "--tta",
    "threshold": "--threshold",
    "probabilities": "--probabilities",
    "overlays": "--overlays",
    "skip_corrupt": "--skip-corrupt",
}


def input_files(input_path: Path) -> list[Path]:
    """The images to predict: `input_path` itself, or the image files of that folder (sorted;
    hidden files ignored).

    Raises:
        MissingFileError: no such file or folder, or a folder without images.
    """
    from zoo.data.io import IMAGE_SUFFIXES

    if input_path.is_file():
        return [input_path]
    if not input_path.is_dir():
        raise MissingFileError(f"predict input not found: {input_path} (an image or a folder)")
    files = sorted(
        p
        for p in input_path.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not files:
        raise MissingFileError(f"No images ({', '.join(IMAGE_SUFFIXES)}) in {input_path}")
    return files


def _check_folders(input_path: Path, output_dir: Path) -> None:
    folder = input_path if input_path.is_dir() else input_path.parent
    inp, out = folder.resolve(), output_dir.resolve()
    if out == inp or out in inp.parents:
        raise OutputError(
            f"Refusing to write masks to {output_dir}: it is (or contains) the input folder "
            f"{folder}, whose images would be overwritten or mixed with masks; pick another "
            "output folder"
        )


def predict_folder(
    model_path: str | os.PathLike,
    input_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    threshold: float | None = None,
    skip_corrupt: bool = False,
    *,
    strategy: Any = None,
    show_progress: bool | None = None,
    option_name: Callable[[str], str] = str,
    **options: Any,
) -> list[Path]:
    """Predict every image of `input_path` (a folder or one file) into `output_dir`.

    Args:
        model_path: a `.keras` file written by train.py.
        input_path: an image, or a folder of images (PNG, JPEG, TIFF, BMP, .npy).
        output_dir: folder for the outputs; must not be (or contain) the input folder.
        threshold: binary/multilabel models: probability above which a pixel is on; None:
            the model's metadata "threshold", else 0.5.
        skip_corrupt: skip unreadable images (named in the log and the summary) instead of
            stopping at the first one.
        strategy: a `tf.distribute` strategy whose replicas share each step's tiles; only the
            chief writes files.
        show_progress: draw a progress line (default: when stderr is a terminal).
        option_name: how messages name an option (``--tile``, ``predict.tile``).
        **options: further `zoo.inference.settings.PredictOptions`: tile ("auto", "whole",
            an int or [h, w]), overlap, blend, batch_size, tta, probabilities (None, "npy",
            "png"), overlays.

    Returns:
        The mask files written (none on non-chief workers).

    Raises:
        ConfigError: a bad option, or one that does not fit the model (before any image is
            read).
        MissingFileError, OutputError, ModelFileError, DataError: one line each, naming the
            path.
    """
    from zoo.data.io import UnreadableFileError, read_pixels
    from zoo.inference.files import FilePredictor
    from zoo.inference.progress import TextProgress
    from zoo.inference.settings import check_options, check_tile_for
    from zoo.outputs import mask_names
    from zoo.saving import load_segmentation_model

    opts = check_options(
        {**options, "threshold": threshold, "skip_corrupt": skip_corrupt}, name=option_name
    )
    input_path, output_dir = Path(input_path), Path(output_dir)
    files = input_files(input_path)
    _check_folders(input_path, output_dir)
    if strategy is None:
        model = load_segmentation_model(model_path)
    else:
        with strategy.scope():
            model = load_segmentation_model(model_path)
    check_tile_for(model, opts, option_name)
    runner = FilePredictor(model, opts, strategy=strategy)
    names = mask_names(files)
    written: list[Path] = []
    skipped: list[Path] = []
    bar = TextProgress(len(files), enabled=False if not runner.chief else show_progress)
    with bar:
        for index, path in enumerate(files):
            bar.image(index, path.name)
            try:
                image = read_pixels(path)
            except UnreadableFileError as err:
                if not opts.skip_corrupt:
                    raise
                log.warning("Skipping unreadable image: %s", err)
                skipped.append(path)
                continue
            try:
                out = runner.predict(image, output_dir, names[path], progress=bar.update)
            except DataError as err:
                raise DataError(f"{path}: {err}") from None
            written.extend(out["masks"])
    if runner.chief:
        extra = ""
        if skipped:
            extra = f" ({len(skipped)} unreadable image(s) skipped: "
            extra += ", ".join(p.name for p in skipped) + ")"
        print(f"Wrote {len(written)} masks to {output_dir}{extra}")
    return written


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m zoo.predict",
        description="Predict masks for images of any size with a saved model (docs/inference.md).",
    )
    parser.add_argument("--model", required=True, help="a .keras file written by train.py")
    parser.add_argument("--input", required=True, help="an image, or a folder of images")
    parser.add_argument("--output", required=True, help="folder for the masks")
    parser.add_argument(
        "--tile",
        default="auto",
        help="auto (default: whole up to 2x the training size per side, else tiles of the "
        "training size), whole, N or HxW (multiples of the model's divisor)",
    )
    parser.add_argument("--overlap", default="0.5", help="tile overlap in [0, 1) (0.5)")
    parser.add_argument("--blend", default="gaussian", help="gaussian, uniform or center")
    parser.add_argument("--batch-size", default="8", help="tiles per step per replica (8)")
    parser.add_argument(
        "--tta",
        default=None,
        help="none, hflip, flip or d4 (default: the model's own, recorded by recipe=auto, "
        "else none)",
    )
    parser.add_argument(
        "--threshold",
        default=None,
        help="binary/multilabel probability cut in (0, 1) (default: the model's, else 0.5)",
    )
    parser.add_argument(
        "--probabilities",
        nargs="?",
        const="npy",
        default=None,
        help="also write probability maps: npy (float16 (H, W, K), the default) or png "
        "(16-bit, one per class)",
    )
    parser.add_argument(
        "--overlays", action="store_true", help="also write image + mask overlays (RGB PNG)"
    )
    parser.add_argument(
        "--skip-corrupt", action="store_true", help="skip unreadable images instead of stopping"
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress line (drawn on terminals only)"
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        from zoo.inference.settings import check_options, number

        # Every flag is checked before the model loads (then the tile against its divisor).
        values = {key: getattr(args, key) for key in FLAGS}
        for key in ("overlap", "batch_size", "threshold"):
            values[key] = number(values[key])
        opts = check_options(values, name=FLAGS.__getitem__).as_dict()
        threshold, skip_corrupt = opts.pop("threshold"), opts.pop("skip_corrupt")
        predict_folder(
            args.model,
            args.input,
            args.output,
            threshold,
            skip_corrupt,
            show_progress=False if args.no_progress else None,
            option_name=FLAGS.__getitem__,
            **opts,
        )
    except UserError as err:
        if os.environ.get("ZOO_FULL_ERROR") == "1":
            raise
        sys.exit(f"Error: {err}")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
