"""Color-coded class masks: RGB masks where each class is painted in its own color.

Some datasets (CamVid, Cityscapes' color images, many annotation tools' exports) store masks
as RGB pictures with one color per class instead of class ids. `data.class_colors` lists the
colors in class order; `read_class_mask` turns such a mask into class ids, and every other
mask into its stored values (`zoo.data.io.read_mask`), so the folder dataset, the fingerprint
and the full-resolution evaluation read masks one way.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zoo.data.io import JPEG_SUFFIXES, decode, read_mask
from zoo.errors import DataError


def _codes(rgb: np.ndarray) -> np.ndarray:
    """One integer per color: 0xRRGGBB."""
    rgb = rgb.astype(np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def colors_to_ids(
    rgb: np.ndarray,
    colors: Sequence[Sequence[int]],
    ignore_index: int | None = None,
    source: str | os.PathLike = "mask",
) -> np.ndarray:
    """Map an (H, W, 3+) color mask to int32 class ids: the pixels of `colors[i]` become i.

    Args:
        rgb: (H, W, 3) or (H, W, 4) integer colors (a fourth, alpha, channel is not compared).
        colors: one [r, g, b] per class, in class order.
        ignore_index: the id given to pixels whose color is not listed; None makes such a
            pixel an error.
        source: the file named in errors.

    Returns:
        (H, W) int32 class ids.

    Raises:
        DataError: a pixel's color is not in `colors` and `ignore_index` is None.

    Example:
        >>> m = np.array([[[0, 0, 0], [255, 0, 0]]], np.uint8)
        >>> colors_to_ids(m, [[0, 0, 0], [255, 0, 0]]).tolist()
        [[0, 1]]
    """
    palette = _codes(np.asarray(colors, np.int64).reshape(-1, 3))
    order = np.argsort(palette)
    codes = _codes(np.asarray(rgb)[..., :3])
    pos = np.clip(np.searchsorted(palette[order], codes), 0, len(palette) - 1)
    known = palette[order][pos] == codes
    ids = order[pos].astype(np.int32)
    if known.all():
        return ids
    if ignore_index is None:
        code = int(codes[~known][0])
        color = [code >> 16, (code >> 8) & 255, code & 255]
        raise DataError(
            f"Mask '{source}' has color {color} ({int((codes == code).sum())} px) that is not in "
            f"data.class_colors ({len(palette)} colors); add it, or set data.ignore_index "
            "(e.g. 255) to ignore the pixels of unlisted colors"
        )
    return np.where(known, ids, np.int32(ignore_index))


def read_class_mask(path: str | os.PathLike, c: Any) -> np.ndarray:
    """A class mask's raw ids as int32 (H, W) under the folder config `c`.

    With `c.class_colors` the mask must be an RGB(A) PNG/TIFF whose colors are mapped to class
    ids (`colors_to_ids`); otherwise the stored values are read (`zoo.data.io.read_mask`),
    to be checked and mapped by `zoo.data.folder.map_mask`.

    Raises:
        DataError: a JPEG or single-channel mask with `class_colors`, or an unlisted color.
    """
    colors = getattr(c, "class_colors", None)
    if not colors:
        return read_mask(path)
    path = Path(path)
    if path.suffix.lower() in JPEG_SUFFIXES:
        raise DataError(
            f"Mask '{path}' is a JPEG: its compression blends the colors of data.class_colors; "
            "save color masks as PNG"
        )
    arr = decode(path, "mask")
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4) or arr.dtype.kind not in "iu":
        raise DataError(
            f"Mask '{path}' has shape {tuple(arr.shape)} and dtype {arr.dtype}, not RGB colors "
            "as data.class_colors expects; set data.class_colors=null to read its values as "
            "class ids"
        )
    return colors_to_ids(arr, colors, c.ignore_index, path)
