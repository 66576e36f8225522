"""Reading images and masks from disk (PNG, JPEG and other Pillow formats, and .npy)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from zoo.errors import DataError, MissingFileError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".npy")
MASK_SUFFIXES = (".png", ".bmp", ".tif", ".tiff", ".npy")
_16BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")  # unsigned 16-bit


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


# The one intensity rule (docs/data.md, "Image intensities"): an integer image is scaled by the
# full range of its unsigned 8- or 16-bit type; a float image must already lie in [0, 1]. Nothing
# else is guessed: a float's range (radiance, reflectance, background-subtracted or dB values) or
# a signed / 32-bit integer's "white" is known only to the user, and a per-image guess would make
# one intensity mean different things in different images, and differently at prediction time.
def _scale_integer(arr: np.ndarray, path: Path, source: str) -> np.ndarray:
    """uint8 pixels as they are, uint16 as float32 / 65535 (any byte order); others refused."""
    if arr.dtype.kind == "u" and arr.dtype.itemsize == 1:
        return np.ascontiguousarray(arr, np.uint8)
    if arr.dtype.kind == "u" and arr.dtype.itemsize == 2:
        return (arr / 65535.0).astype(np.float32)
    lo, hi = (arr.min(), arr.max()) if arr.size else (0, 0)
    raise DataError(
        f"Image '{path}' is {source} with values in [{lo}, {hi}]; integer images must be "
        "unsigned 8 or 16 bit (scaled by 255 or 65535), because other integer types have no "
        "standard full scale: convert it to uint8/uint16, or to float32 in [0, 1]"
    )


def _check_float(arr: np.ndarray, path: Path, source: str) -> np.ndarray:
    """Float pixels as float32 if they are finite and in [0, 1]; otherwise a one-line error."""
    arr = arr.astype(np.float32)
    bad = ~np.isfinite(arr)
    if bad.any():
        raise DataError(f"Image '{path}' contains NaN or Inf values ({int(bad.sum())} values)")
    if arr.size and (arr.min() < 0 or arr.max() > 1):
        raise DataError(
            f"Image '{path}' is {source} with values in [{arr.min():g}, {arr.max():g}]; float "
            "images must lie in [0, 1] (segzoo never guesses a float image's range): scale it "
            "first, e.g. divide 0..255 data by 255, or by your sensor's full-scale value"
        )
    return arr


def read_image_raw(path: str | os.PathLike) -> np.ndarray:
    """Decode an image without losing precision: uint8 (H, W, 3) for 8-bit files, else float32.

    Intensities follow one rule for every source: unsigned 8-bit pixels are kept as uint8
    (scaled by 1/255 later), unsigned 16-bit pixels (PNG, TIFF, uint16 .npy) are divided by
    65535, float pixels (TIFF mode "F", float .npy) must be finite and lie in [0, 1]; signed or
    32-bit integer images are refused. Nothing is clipped.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: unreadable file, unsupported shape or dtype, NaN/Inf values or floats
            outside [0, 1].
    """
    path = Path(path)
    if path.suffix.lower() == ".npy":
        arr = _to_rgb(_load_npy(path, "image"), path)
        if arr.dtype.kind == "f":
            return _check_float(arr, path, f"a .npy of dtype {arr.dtype}")
        if arr.dtype.kind in "iu":
            return _scale_integer(arr, path, f"a .npy of dtype {arr.dtype}")
        raise DataError(
            f"Image '{path}' has dtype {arr.dtype}; expected uint8, uint16 or float in [0, 1]"
        )
    img = _open(path, "image")
    if img.mode.startswith("I"):  # 16- or 32-bit integer pixels
        arr = np.asarray(img)
        # Older Pillows open 16-bit PNGs as mode "I" (int32); PNG has no signed or 32-bit pixels.
        if img.mode in _16BIT_MODES or img.format == "PNG":
            arr = arr.astype(np.uint16)
        return _to_rgb(_scale_integer(arr, path, f"a {img.format} of mode {img.mode}"), path)
    if img.mode == "F":
        arr = np.asarray(img, np.float32)
        return _to_rgb(_check_float(arr, path, f"a float {img.format}"), path)
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
