"""What a run leaves in its directory: metrics.json, PNG overlays, masks, the inference model.

Every file is written by `atomic_write`: to a temporary name in the same folder, flushed to disk
and renamed into place, so a crash or a full disk never leaves a half-written file where a good
one was. Written files get the permissions the user's umask gives new files (a temporary file
would otherwise stay private, mode 0600).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zoo.errors import OutputError

_UMASK = os.umask(0)
os.umask(_UMASK)  # read once at import: os.umask can only be read by setting it


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[str]:
    """Yield a temporary path next to `path`; when the block succeeds, flush it to disk and
    rename it to `path`. On an exception the temporary file is removed and `path` is left
    as it was.

    Args:
        path: the final file.
        suffix: suffix of the temporary name (some writers pick the format from it).

    Raises:
        OutputError: the folder cannot be written (permissions, read-only filesystem).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.stem}.", suffix=suffix or path.suffix
        )
    except PermissionError as err:
        raise OutputError(
            f"Cannot write {path}: {err.strerror}; pick another output folder"
        ) from None
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())  # the rename must never expose data still in the page cache
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], suffix: str = "") -> Path:
    """Call `write(tmp_path)`, flush it to disk, then atomically rename it to `path`.

    Args:
        path: the final file.
        write: writes the content to the temporary path it receives.
        suffix: suffix of the temporary name (some writers pick the format from it).

    Returns:
        `path`.

    Raises:
        OutputError: the folder cannot be written (permissions, read-only filesystem).
    """
    with atomic_path(path, suffix) as tmp:
        write(tmp)
    return Path(path)


def to_plain(value: Any) -> Any:
    """Plain Python (dicts, lists, scalars) from configs, dataclasses, NumPy values and Keras'
    tracked containers: what JSON, YAML and backups store."""
    import dataclasses
    from collections.abc import Mapping

    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
    return value


def _json_safe(value: Any) -> Any:
    value = to_plain(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None  # NaN/Inf are not JSON; an undefined score is written as null
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def write_json(path: str | os.PathLike, data: dict[str, Any]) -> Path:
    """Write `data` as indented JSON, atomically (NaN/Inf become null)."""

    def _write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(_json_safe(data), f, indent=2, sort_keys=True)
            f.write("\n")

    return atomic_write(path, _write)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def all_finite(arrays: Sequence[Any]) -> bool:
    """True when every floating-point array holds only finite values (NaN/Inf are never saved)."""
    return all(
        np.all(np.isfinite(a))
        for a in map(np.asarray, arrays)
        if np.issubdtype(a.dtype, np.inexact)
    )


def save_model(model: Any, path: str | os.PathLike) -> Path:
    """Save a `.keras` file atomically.

    Raises:
        FloatingPointError: the model has non-finite weights (nothing is written).
    """
    if not all_finite(model.get_weights()):
        raise FloatingPointError(f"Refusing to save {path}: the model has non-finite weights")
    return atomic_write(path, lambda tmp: model.save(tmp), suffix=".keras")


def mask_names(paths: Sequence[str | os.PathLike]) -> dict[Path, str]:
    """The file name of the mask written for each input image: the one rule every writer uses.

    `<stem>.png`; when two inputs share a stem (`x.png`, `x.jpg`), each of them gets
    `<name>.png` with its full name instead (`x.png.png`, `x.jpg.png`), so no mask overwrites
    another and the name says which input it belongs to.
    """
    paths = [Path(p) for p in paths]
    stems: dict[str, int] = {}
    for p in paths:
        stems[p.stem] = stems.get(p.stem, 0) + 1
    return {p: (f"{p.name}.png" if stems[p.stem] > 1 else f"{p.stem}.png") for p in paths}


def _colorize(
    mask: np.ndarray, num_classes: int, ignore_index: int | None, colors: Any = None
) -> np.ndarray:
    """Class ids -> RGB uint8 with a fixed palette, or the data's `class_colors` (ignored
    pixels grey)."""
    rng = np.random.default_rng(12345)
    palette = rng.integers(40, 255, size=(max(num_classes, 2) + 1, 3)).astype(np.uint8)
    palette[0] = 0
    palette[1] = (255, 255, 255) if num_classes <= 2 else palette[1]
    if colors:
        palette[: len(colors)] = np.asarray(colors, np.uint8)
    m = np.asarray(mask).astype(np.int64)
    out = palette[np.clip(m, 0, len(palette) - 1)]
    if ignore_index is not None:
        out[m == ignore_index] = (128, 128, 128)
    return out


# Multilabel overlays: one distinct, saturated color per label (then a seeded palette).
LABEL_COLORS = np.array(
    [(230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25), (145, 30, 180),
     (70, 240, 240), (245, 130, 48), (240, 50, 230), (210, 245, 60), (0, 128, 128)],
    np.uint8,
)  # fmt: skip


def label_colors(k: int) -> np.ndarray:
    """(k, 3) uint8 colors, one per label: `LABEL_COLORS`, then seeded random ones."""
    if k <= len(LABEL_COLORS):
        return LABEL_COLORS[:k].copy()
    extra = np.random.default_rng(54321).integers(40, 256, size=(k - len(LABEL_COLORS), 3))
    return np.concatenate([LABEL_COLORS, extra.astype(np.uint8)])


def blend_labels(rgb: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Draw multilabel masks over an image: every label in its own color (`label_colors`).

    A pixel with several labels gets the mean of their colors (red + green labels overlap in
    olive), so overlaps stay visible instead of the last label hiding the others; pixels with
    no label keep the image. Values other than 1 (0, ignore_index) are not drawn.

    Args:
        rgb: (H, W, 3) uint8 image.
        labels: (H, W, K) 0/1 labels.
        alpha: opacity of the label colors.
    """
    on = np.asarray(labels) == 1
    colors = label_colors(on.shape[-1]).astype(np.float32)
    count = on.sum(-1, keepdims=True)
    mean = (on.astype(np.float32) @ colors) / np.maximum(count, 1)
    base = np.asarray(rgb, np.float32)
    out = np.where(count > 0, (1 - alpha) * base + alpha * mean, base)
    return np.round(out).astype(np.uint8)


def predicted_mask(logits: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Class ids from logits: sigmoid > threshold for one channel, arg-max otherwise."""
    logits = np.asarray(logits, dtype=np.float32)
    if logits.shape[-1] == 1:
        return (1.0 / (1.0 + np.exp(-logits[..., 0])) > threshold).astype(np.uint8)
    return np.argmax(logits, axis=-1).astype(np.uint8)


def display_rgb(image: np.ndarray) -> np.ndarray:
    """Image pixels (H, W) or (H, W, C) as uint8 RGB for display, whatever C: gray (one
    channel, or two: the first) is repeated to RGB; of three or more channels the first
    three are shown (RGB, or the first three bands), the rest (alpha, near-infrared) dropped.

    uint8 pixels are shown as they are, uint16 scaled by 255 / 65535, floats in [0, 1] by 255.
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    image = image[..., :3] if image.shape[-1] >= 3 else np.repeat(image[..., :1], 3, -1)
    kind, size = image.dtype.kind, image.dtype.itemsize
    if kind == "u" and size == 1:
        return np.ascontiguousarray(image, np.uint8)
    if kind == "u" and size == 2:
        return (image.astype(np.uint32) * 255 // 65535).astype(np.uint8)
    return np.round(np.clip(image.astype(np.float32), 0, 1) * 255).astype(np.uint8)


def write_overlays(
    out_dir: str | os.PathLike,
    images: np.ndarray,
    masks: np.ndarray,
    logits: np.ndarray,
    num_classes: int,
    ignore_index: int | None = None,
    mode: str | None = None,
    threshold: float = 0.5,
    class_colors: Any = None,
) -> list[Path]:
    """One PNG per sample: image | ground truth | prediction, side by side.

    `images` are float (n, H, W, C) in [0, 1] with any C, shown by `display_rgb` (gray
    images as gray, multi-band images by their first three channels). Multilabel
    (`mode="multilabel"`, masks (n, H, W, K)): truth and prediction (sigmoid > `threshold`
    per label) are drawn over a dimmed gray copy of the image, each label in its color
    (`blend_labels`). `class_colors` (one [r, g, b] per class) draws classes in the
    dataset's own colors (`data.class_colors`).
    """
    from PIL import Image

    out_dir = Path(out_dir)
    paths = []
    multilabel = mode == "multilabel"
    if multilabel:
        preds = (1.0 / (1.0 + np.exp(-np.asarray(logits, np.float32))) > threshold).astype(np.uint8)
    else:
        preds = predicted_mask(logits)
    for i, (img, gt, pred) in enumerate(zip(images, masks, preds)):
        rgb = display_rgb(np.asarray(img, dtype=np.float32))
        if multilabel:
            gt = np.asarray(gt).reshape(*rgb.shape[:2], -1)
            # Labels over a dimmed gray copy of the image: the colors are the labels' only.
            gray = np.repeat(rgb.mean(-1, keepdims=True) * 0.5, 3, -1).astype(np.uint8)
            parts = [rgb, blend_labels(gray, gt, 0.7), blend_labels(gray, pred, 0.7)]
        else:
            gt = np.asarray(gt).reshape(rgb.shape[:2])
            truth = _colorize(gt, num_classes, ignore_index, class_colors)
            parts = [rgb, truth, _colorize(pred, num_classes, None, class_colors)]
        panel = np.concatenate(parts, axis=1)
        path = out_dir / f"val_{i:03d}.png"
        atomic_write(path, lambda tmp, p=panel: Image.fromarray(p).save(tmp, format="PNG"))
        paths.append(path)
    return paths
