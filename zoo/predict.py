"""Predict PNG masks for a folder of images with a saved model.

    python -m zoo.predict --model outputs/.../model.keras --input my_images/ --output masks/

Binary models write 0/255 masks, multiclass models class ids. Mask file names follow
`zoo.outputs.mask_names` (`<stem>.png`, or `<name>.png` when two inputs share a stem); each mask
is written atomically. Scoring a model on a data config is `train.py mode=evaluate`
(`zoo.evaluation`).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from zoo.errors import DataError, MissingFileError, OutputError, UserError

log = logging.getLogger("zoo")


def predict_image(model: Any, image: np.ndarray) -> np.ndarray:
    """Logits for one (H, W, C) image of any size: padded to the model's divisor, cropped back."""
    divisor = int(getattr(model, "divisor", 1) or 1)
    h, w = image.shape[:2]
    # Edge padding keeps the statistics near the border; the padded logits are cut off.
    padded = np.pad(image, ((0, -h % divisor), (0, -w % divisor), (0, 0)), mode="edge")
    return np.asarray(model(padded[None], training=False))[0, :h, :w]


def _check_folders(input_dir: Path, output_dir: Path) -> None:
    if not input_dir.is_dir():
        raise MissingFileError(f"predict input folder not found: {input_dir}")
    inp, out = input_dir.resolve(), output_dir.resolve()
    if out == inp or out in inp.parents:
        raise OutputError(
            f"Refusing to write masks to {output_dir}: it is (or contains) the input folder "
            f"{input_dir}, whose images would be overwritten or mixed with masks; pick another "
            "output folder"
        )


def predict_folder(
    model_path: str | os.PathLike,
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    threshold: float = 0.5,
    skip_corrupt: bool = False,
) -> list[Path]:
    """Write one PNG mask per image of `input_dir` into `output_dir`.

    Args:
        model_path: a `.keras` file written by train.py.
        input_dir: folder of images (PNG, JPEG, TIFF, BMP, .npy).
        output_dir: folder for the masks; must not be (or contain) `input_dir`.
        threshold: binary models: probability above which a pixel is foreground.
        skip_corrupt: skip unreadable images (logged) instead of stopping at the first one.

    Returns:
        The mask files written.

    Raises:
        MissingFileError, OutputError, ModelFileError, DataError: one line each, naming the path.
    """
    from PIL import Image

    from zoo.data.io import IMAGE_SUFFIXES, UnreadableFileError, read_image
    from zoo.outputs import atomic_write, mask_names, predicted_mask
    from zoo.saving import load_segmentation_model

    input_dir, output_dir = Path(input_dir), Path(output_dir)
    _check_folders(input_dir, output_dir)
    files = sorted(
        p for p in input_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not files:
        raise MissingFileError(f"No images ({', '.join(IMAGE_SUFFIXES)}) in {input_dir}")
    model = load_segmentation_model(model_path)
    channels = model.inputs[0].shape[-1]
    names = mask_names(files)
    written, skipped = [], []
    for path in files:
        try:
            image = read_image(path)
        except UnreadableFileError as err:
            if not skip_corrupt:
                raise
            log.warning("Skipping unreadable image: %s", err)
            skipped.append(path)
            continue
        if channels is not None and image.shape[-1] != channels:
            raise DataError(
                f"{path} has {image.shape[-1]} channels but {model_path} takes {channels}"
            )
        logits = predict_image(model, image)
        mask = predicted_mask(logits, threshold)
        if logits.shape[-1] == 1:
            mask = mask * 255  # viewable binary masks; read back as 0/1 by the folder dataset
        out = output_dir / names[path]
        atomic_write(
            out, lambda tmp, m=mask: Image.fromarray(m.astype(np.uint8)).save(tmp, format="PNG")
        )
        written.append(out)
    extra = f" ({len(skipped)} unreadable image(s) skipped)" if skipped else ""
    print(f"Wrote {len(written)} masks to {output_dir}{extra}")
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m zoo.predict", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--model", required=True, help="a .keras file written by train.py")
    parser.add_argument("--input", required=True, help="folder of images")
    parser.add_argument("--output", required=True, help="folder for the PNG masks")
    parser.add_argument(
        "--threshold", type=float, default=0.5, help="binary models: probability cut"
    )
    parser.add_argument(
        "--skip-corrupt", action="store_true", help="skip unreadable images instead of stopping"
    )
    args = parser.parse_args(argv)
    if not 0 < args.threshold <= 1:
        parser.error(f"--threshold={args.threshold}: expected a number in (0, 1]")
    try:
        predict_folder(args.model, args.input, args.output, args.threshold, args.skip_corrupt)
    except UserError as err:
        if os.environ.get("ZOO_FULL_ERROR") == "1":
            raise
        sys.exit(f"Error: {err}")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
