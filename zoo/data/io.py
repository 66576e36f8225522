"""Reading images and masks from disk (PNG, JPEG and other Pillow formats, and .npy)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from zoo.errors import DataError, MissingFileError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".npy")
MASK_SUFFIXES = (".png", ".bmp", ".tif", ".tiff", ".npy")
_16BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


class UnreadableFileError(DataError):
    """A file exists but cannot be decoded (what `skip_corrupt` may skip)."""


def _open(path: Path, what: str) -> Image.Image:
    if not path.exists():
        raise MissingFileError(f"{what} file not found: '{path}'")
    try:
        img = Image.open(path)
        img.load()
    except Exception as e:  # Pillow raises many types for broken files
        raise UnreadableFileError(f"Cannot read {what} '{path}': {type(e).__name__}: {e}") from None
    return img


def _load_npy(path: Path, what: str) -> np.ndarray:
    """`np.load` with the same errors as `_open`: missing file, then unreadable file."""
    if not path.exists():
        raise MissingFileError(f"{what} file not found: '{path}'")
    try:
        return np.load(path, allow_pickle=False)
    except Exception as e:  # numpy raises several types for broken files
        raise UnreadableFileError(f"Cannot read {what} '{path}': {type(e).__name__}: {e}") from None


def _to_rgb(arr: np.ndarray, path: Path) -> np.ndarray:
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
        raise DataError(
            f"Image '{path}' has shape {arr.shape}; expected (H, W) or (H, W, C) with C in 1, 3, 4"
        )
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    return arr[..., :3]


def read_image_raw(path: str | os.PathLike) -> np.ndarray:
    """Decode an image without losing precision: uint8 (H, W, 3) for 8-bit files, else float32.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: unreadable file, unsupported shape, NaN/Inf values or floats outside [0, 1].
    """
    path = Path(path)
    if path.suffix.lower() == ".npy":
        arr = _load_npy(path, "image")
        arr = _to_rgb(arr, path)
        if arr.dtype == np.uint8:
            return np.ascontiguousarray(arr)
        if arr.dtype == np.uint16:
            return (arr / 65535.0).astype(np.float32)
        if arr.dtype.kind not in "fiu":
            raise DataError(f"Image '{path}' has dtype {arr.dtype}; expected float or integer")
        arr = arr.astype(np.float32)
        bad = ~np.isfinite(arr)
        if bad.any():
            raise DataError(f"Image '{path}' contains NaN or Inf values ({int(bad.sum())} values)")
        if arr.min() < 0 or arr.max() > 1:
            raise DataError(
                f"Image '{path}' has values in [{arr.min():g}, {arr.max():g}]; float .npy images "
                "must be scaled to [0, 1]"
            )
        return arr
    img = _open(path, "image")
    if img.mode in _16BIT_MODES:
        arr = np.asarray(img).astype(np.float32) / 65535.0
        return _to_rgb(np.clip(arr, 0, 1), path)
    if img.mode == "F":
        arr = np.asarray(img, np.float32)
        if not np.isfinite(arr).all():
            raise DataError(f"Image '{path}' contains NaN or Inf values")
        return _to_rgb(np.clip(arr, 0, 1), path)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img, np.uint8)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image as float32 (H, W, 3) in [0, 1] (the models' input convention).

    Args:
        path: PNG/JPEG/BMP/TIFF (8 or 16 bit, gray, RGB or RGBA) or .npy file.

    Returns:
        float32 array (H, W, 3) in [0, 1]; gray images are repeated to 3 channels, alpha dropped.

    Example:
        >>> read_image("photo.jpg").shape  # doctest: +SKIP
        (480, 640, 3)
    """
    arr = read_image_raw(path)
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    return arr.astype(np.float32)


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a mask's raw values as int32 (H, W): 8- or 16-bit PNG, palette PNG (indices) or .npy.

    Values are returned as stored (0/255 binary masks are mapped later, with the dataset's
    `num_classes` known).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: unreadable file, or a multi-channel mask whose channels differ.
    """
    path = Path(path)
    if path.suffix.lower() == ".npy":
        arr = _load_npy(path, "mask")
        if arr.dtype.kind not in "iub":
            raise DataError(f"Mask '{path}' has dtype {arr.dtype}; expected integers")
    else:
        img = _open(path, "mask")
        arr = np.asarray(img)
    if arr.ndim == 3:
        if not (arr[..., :1] == arr[..., : min(arr.shape[-1], 3)]).all():
            raise DataError(
                f"Mask '{path}' has {arr.shape[-1]} different channels; expected a single-channel "
                "(gray, 16-bit or palette) mask"
            )
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise DataError(f"Mask '{path}' has shape {arr.shape}; expected (H, W)")
    return arr.astype(np.int32)
