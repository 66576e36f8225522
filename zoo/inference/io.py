"""Reading images too large to hold twice (TIFF through tifffile, memory-mapped), and atomic
file replacement.

Reading (`read_image`) returns the stored pixels (uint8, uint16 or float32; gray as (H, W)),
never a float copy of the whole image: the predictor converts tile by tile.

- TIFF: memory-mapped straight from the file when it is uncompressed and contiguous
  (`tifffile.memmap`); otherwise decoded into an anonymous temporary file that is
  memory-mapped (`out="memmap"`), so a compressed 20k x 20k TIFF costs disk, not RAM.
  Only the first series at full resolution is read; planar (C, H, W) data is viewed as
  (H, W, C).
- ``.npy``: memory-mapped (`np.load(mmap_mode="r")`).
- PNG, JPEG, BMP: Pillow decodes the whole file (transiently about twice the image bytes).
  Pillow refuses images over ~179 MP as potential decompression bombs; we raise that limit
  deliberately to `max_pixels` (default 2**30, about 32k x 32k, 3 GiB as RGB) for the call
  and reject larger files with one line naming them.

Writing atomically (`atomic_path`) and in strips or tiles: `zoo.inference.writers`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from zoo.data.io import UnreadableFileError
from zoo.errors import DataError, MissingFileError

MAX_PIXELS = 2**30
TIFF_SUFFIXES = (".tif", ".tiff")


# --------------------------------------------------------------------------- reading


def _tiff(path: Path, memmap: bool) -> np.ndarray:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes = series.axes
            arr = None
            if memmap:
                try:
                    arr = tifffile.memmap(path, mode="r")
                except ValueError:  # compressed or not contiguous: decode to a temp map
                    arr = None
            if arr is None:
                arr = series.asarray(out="memmap" if memmap else None)
    except Exception as e:  # tifffile raises many types for broken files
        raise UnreadableFileError(f"Cannot read image '{path}': {type(e).__name__}: {e}") from None
    # Drop leading length-1 axes (a single page, plane, time point).
    while arr.ndim > 2 and arr.shape[0] == 1 and axes[0] not in "YX":
        arr, axes = arr[0], axes[1:]
    if axes in ("CYX", "SYX"):
        arr, axes = np.moveaxis(arr, 0, -1), "YXS"
    if axes not in ("YX", "YXS", "YXC"):
        raise DataError(
            f"Image '{path}' has TIFF axes {series.axes} and shape {series.shape}; expected a "
            "2-D image (YX) with optional samples (YXS)"
        )
    return arr


def _pillow(path: Path, max_pixels: int) -> np.ndarray:
    from PIL import Image

    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels  # deliberate: large scenes are the point here
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            try:
                img = Image.open(path)
            except Image.DecompressionBombError:
                img = None
            except Exception as e:
                raise UnreadableFileError(
                    f"Cannot read image '{path}': {type(e).__name__}: {e}"
                ) from None
            if img is None or img.width * img.height > max_pixels:
                raise DataError(
                    f"Image '{path}' has more than max_pixels={max_pixels} pixels; pass a "
                    "larger max_pixels if the file is trusted"
                )
            with img:
                try:
                    img.load()
                except Exception as e:
                    raise UnreadableFileError(
                        f"Cannot read image '{path}': {type(e).__name__}: {e}"
                    ) from None
                if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
                    return np.clip(np.asarray(img), 0, 65535).astype(np.uint16)
                if img.mode == "F":
                    return np.asarray(img, np.float32)
                if img.mode not in ("L", "RGB", "RGBA"):
                    img = img.convert(
                        "RGBA" if "A" in img.mode or "transparency" in img.info else "RGB"
                    )
                return np.asarray(img)
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def read_image(path: str | os.PathLike, memmap: bool = True, max_pixels: int = MAX_PIXELS) -> Any:
    """The stored pixels of an image file, memory-mapped where the format allows.

    Args:
        path: TIFF, ``.npy``, PNG, JPEG or BMP file.
        memmap: map TIFF/.npy data instead of reading it into memory.
        max_pixels: largest image Pillow may decode (PNG/JPEG/BMP).

    Returns:
        (H, W) or (H, W, C) uint8, uint16 or float32 (a `numpy.memmap` for mapped files).

    Raises:
        MissingFileError: no such file.
        zoo.data.io.UnreadableFileError: the file cannot be decoded (named).
        DataError: not a 2-D image, or larger than `max_pixels`.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"image file not found: '{path}'")
    suffix = path.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        arr = _tiff(path, memmap)
    elif suffix == ".npy":
        try:
            arr = np.load(path, mmap_mode="r" if memmap else None, allow_pickle=False)
        except Exception as e:
            raise UnreadableFileError(
                f"Cannot read image '{path}': {type(e).__name__}: {e}"
            ) from None
    else:
        arr = _pillow(path, max_pixels)
    if arr.ndim not in (2, 3) or arr.dtype.kind not in "uif":
        raise DataError(
            f"Image '{path}' has shape {arr.shape} and dtype {arr.dtype}; expected (H, W) or "
            "(H, W, C) integers or floats"
        )
    if arr.dtype.kind == "i" or (arr.dtype.kind == "u" and arr.dtype.itemsize > 2):
        raise DataError(f"Image '{path}' has dtype {arr.dtype}; expected uint8, uint16 or float")
    return arr


# --------------------------------------------------------------------------- atomic writes


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path next to `path`; rename it to `path` when the block succeeds.

    On an exception the temporary file is removed and `path` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
