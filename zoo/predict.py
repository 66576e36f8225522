"""Evaluate a saved model on a dataset, or predict PNG masks for a folder of images.

    python -m zoo.predict --model outputs/.../model.keras --input my_images/ --output masks/

Evaluation on a data config goes through the Hydra app:

    python train.py mode=evaluate checkpoint=outputs/.../model.keras data=folder data.root=...
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".npy", ".bmp", ".tif", ".tiff")


def predict_image(model: Any, image: np.ndarray) -> np.ndarray:
    """Logits for one (H, W, 3) image of any size: padded to the model's divisor, cropped back."""
    divisor = int(getattr(model, "divisor", 1) or 1)
    h, w = image.shape[:2]
    # Edge padding keeps the statistics near the border; the padded logits are cut off.
    padded = np.pad(image, ((0, -h % divisor), (0, -w % divisor), (0, 0)), mode="edge")
    return model.predict(padded[None], verbose=0)[0, :h, :w]


def predict_folder(
    model_path: str | os.PathLike,
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    threshold: float = 0.5,
) -> list[Path]:
    """Write one PNG mask (class ids; binary masks as 0/255) per image of `input_dir`."""
    from PIL import Image

    from zoo.data import read_image
    from zoo.outputs import atomic_write, predicted_mask
    from zoo.saving import load_model

    input_dir, output_dir = Path(input_dir), Path(output_dir)
    if not input_dir.is_dir():
        raise FileNotFoundError(f"predict input folder not found: {input_dir}")
    files = sorted(p for p in input_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"No images ({', '.join(IMAGE_SUFFIXES)}) in {input_dir}")
    model = load_model(model_path)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in files:
        image = read_image(path)
        logits = predict_image(model, image)
        mask = predicted_mask(logits, threshold)
        if logits.shape[-1] == 1:
            mask = mask * 255  # viewable binary masks; read back as 0/1 by the folder dataset
        out = output_dir / f"{path.stem}.png"
        atomic_write(
            out, lambda tmp, m=mask: Image.fromarray(m.astype(np.uint8)).save(tmp, format="PNG")
        )
        written.append(out)
    print(f"Wrote {len(written)} masks to {output_dir}")
    return written


def evaluate_checkpoint(cfg: Any, run_dir: str | os.PathLike) -> float:
    """Dice/IoU of `cfg.checkpoint` on the validation split of `cfg.data` -> eval_metrics.json."""
    from zoo.app import evaluate_model
    from zoo.data import build_datasets
    from zoo.outputs import write_json
    from zoo.saving import load_model

    model = load_model(cfg.checkpoint)
    bundle = build_datasets(cfg.data, global_batch_size=cfg.data.batch_size, seed=cfg.seed)
    info = bundle.info
    results = evaluate_model(model, bundle.val, info.num_classes, info.ignore_index)
    results = {f"val_{k}": v for k, v in results.items()}
    results["checkpoint"] = str(cfg.checkpoint)
    write_json(Path(run_dir) / "eval_metrics.json", results)
    print(f"Validation Dice: {results['val_dice']:.4f}  IoU: {results['val_iou']:.4f}")
    return results["val_dice"]


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
    args = parser.parse_args(argv)
    predict_folder(args.model, args.input, args.output, args.threshold)


if __name__ == "__main__":
    main()
