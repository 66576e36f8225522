"""What a run leaves in its directory: metrics.json, PNG overlays, the inference model.

Every file is written to a temporary name first and renamed into place, so a crash never
leaves a half-written file where a good one was.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], suffix: str = "") -> None:
    """Call `write(tmp_path)`, then atomically rename the result to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.stem}.", suffix=suffix or path.suffix
    )
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path: str | os.PathLike, data: dict[str, Any]) -> None:
    """Write `data` as indented JSON, atomically."""

    def _write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")

    atomic_write(path, _write)


def weights_finite(model: Any) -> bool:
    """True when every weight of `model` is finite (NaN/Inf weights are never saved)."""
    return all(np.all(np.isfinite(np.asarray(w))) for w in model.get_weights())


def save_model(model: Any, path: str | os.PathLike) -> None:
    """Save a `.keras` file atomically; refuse non-finite weights."""
    if not weights_finite(model):
        raise FloatingPointError(f"Refusing to save {path}: the model has non-finite weights")
    atomic_write(path, lambda tmp: model.save(tmp), suffix=".keras")


def _colorize(mask: np.ndarray, num_classes: int, ignore_index: int | None) -> np.ndarray:
    """Class ids -> RGB uint8 with a fixed palette (ignored pixels grey)."""
    rng = np.random.default_rng(12345)
    palette = rng.integers(40, 255, size=(max(num_classes, 2) + 1, 3)).astype(np.uint8)
    palette[0] = 0
    palette[1] = (255, 255, 255) if num_classes <= 2 else palette[1]
    m = np.asarray(mask).astype(np.int64)
    out = palette[np.clip(m, 0, len(palette) - 1)]
    if ignore_index is not None:
        out[m == ignore_index] = (128, 128, 128)
    return out


def predicted_mask(logits: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Class ids from logits: sigmoid > threshold for one channel, arg-max otherwise."""
    logits = np.asarray(logits, dtype=np.float32)
    if logits.shape[-1] == 1:
        return (1.0 / (1.0 + np.exp(-logits[..., 0])) > threshold).astype(np.uint8)
    return np.argmax(logits, axis=-1).astype(np.uint8)


def write_overlays(
    out_dir: str | os.PathLike,
    images: np.ndarray,
    masks: np.ndarray,
    logits: np.ndarray,
    num_classes: int,
    ignore_index: int | None = None,
) -> list[Path]:
    """One PNG per sample: image | ground truth | prediction, side by side."""
    from PIL import Image

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    preds = predicted_mask(logits)
    for i, (img, gt, pred) in enumerate(zip(images, masks, preds)):
        rgb = (np.clip(np.asarray(img, dtype=np.float32), 0, 1) * 255).astype(np.uint8)
        gt = np.asarray(gt).reshape(rgb.shape[:2])
        panel = np.concatenate(
            [
                rgb,
                _colorize(gt, num_classes, ignore_index),
                _colorize(pred, num_classes, None),
            ],
            axis=1,
        )
        path = out_dir / f"val_{i:03d}.png"
        atomic_write(path, lambda tmp, p=panel: Image.fromarray(p).save(tmp, format="PNG"))
        paths.append(path)
    return paths
