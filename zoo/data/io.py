"""Reading images and masks: one decoder for every reader, one intensity rule.

Training data (`zoo.data.folder`), evaluation, prediction (`python -m zoo.predict`) and tiled
inference (`zoo.inference`) all read files here:

- `decode` turns a file into its stored values, once, for every format: TIFF through tifffile
  (`zoo.data.tiff`: memory-mapped when asked and the layout allows; otherwise decoded, into an
  anonymous temporary map when memory-mapping was asked for), ``.npy`` with NumPy
  (memory-mapped when asked), PNG/JPEG/BMP/GIF through Pillow with its decompression-bomb
  limit raised deliberately to `max_pixels` (default 2**30, about 32k x 32k) and checked by
  us instead;
- `check_intensity` is the intensity rule (docs/data.md, "Image intensities"): uint8 and
  uint16 pixels are scaled by their type's full range, floats must be finite and lie in
  [0, 1], signed and 32/64-bit integers are refused; floats are scanned in row blocks, so a
  memory-mapped image is checked without a copy;
- `read_pixels` = decode + rule, keeping the stored dtype (what tiled inference wants: it
  converts tile by tile); `read_image_raw` / `read_image` convert to the model's channel
  count for training (`to_channels`, `data.channels`); `read_mask` reads class ids.
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from zoo.data.tiff import TIFF_SUFFIXES, read_tiff
from zoo.errors import DataError, MissingFileError, UnreadableFileError

# GIF: some public sets ship their annotations as GIFs (DRIVE's vessel masks).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".npy")
MASK_SUFFIXES = (".png", ".bmp", ".gif", ".tif", ".tiff", ".npy", ".jpg", ".jpeg")
JPEG_SUFFIXES = (".jpg", ".jpeg")  # lossy (a 0/255 mask holds 3, 251, ...): binary masks only
MAX_PIXELS = 2**30  # about 32k x 32k (3 GiB as uint8 RGB)
_ROW_BLOCK_BYTES = 64 * 2**20  # float images are checked this much at a time


# --------------------------------------------------------------------------- Pillow

# Pillow refuses images over ~179 MP (`Image.MAX_IMAGE_PIXELS`) as potential decompression
# bombs. Large scenes are the point of tiled inference, so while any of our reads runs the
# global limit is lifted and each file is checked against its own `max_pixels` instead. The
# global is shared by threads (the folder dataset reads in a pool): the first reader lifts
# it, the last one restores it.
_limit_lock = threading.Lock()
_limit_users = 0
_limit_saved: int | None = None


@contextlib.contextmanager
def _pillow_limit_lifted() -> Iterator[None]:
    global _limit_users, _limit_saved
    with _limit_lock:
        if _limit_users == 0:
            _limit_saved = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
        _limit_users += 1
    try:
        yield
    finally:
        with _limit_lock:
            _limit_users -= 1
            if _limit_users == 0:
                Image.MAX_IMAGE_PIXELS = _limit_saved


def _too_large(path: Path, what: str, pixels: int, max_pixels: int) -> DataError:
    return DataError(
        f"{what.capitalize()} '{path}' has {pixels} pixels, more than max_pixels={max_pixels}; "
        "pass a larger max_pixels if the file is trusted"
    )


def _pillow(path: Path, what: str, max_pixels: int) -> np.ndarray:
    """Pillow's decoding: masks as stored (palette indices), images in a mode we take."""
    with _pillow_limit_lifted(), warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(path)
        except Exception as e:  # Pillow raises many types for broken files
            raise UnreadableFileError.from_error(path, what, e) from None
        with img:
            if img.width * img.height > max_pixels:
                raise _too_large(path, what, img.width * img.height, max_pixels)
            frames = getattr(img, "n_frames", 1)
            if frames > 1:  # an animation: which frame is meant is the user's call
                raise DataError(
                    f"{what.capitalize()} '{path}' has {frames} frames; expected one image "
                    "(save the frame you mean as its own file)"
                )
            try:
                img.load()
            except Exception as e:
                raise UnreadableFileError.from_error(path, what, e) from None
            if what == "mask":
                return np.asarray(img)
            mode = img.mode
            if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
                return np.asarray(img).astype(np.uint16)
            if mode == "I":
                arr = np.asarray(img)
                # Older Pillows open 16-bit PNGs as mode "I"; PNG has no signed or 32-bit pixels.
                return arr.astype(np.uint16) if img.format == "PNG" else arr
            if mode == "F":
                return np.asarray(img, np.float32)
            if mode not in ("L", "RGB", "RGBA"):
                if mode in ("1", "LA", "La"):
                    target = "L"
                elif "A" in mode or "transparency" in img.info:
                    target = "RGBA"
                else:
                    target = "RGB"
                img = img.convert(target)
            return np.asarray(img)


# --------------------------------------------------------------------------- decoding


def decode(
    path: str | os.PathLike, what: str = "image", memmap: bool = False, max_pixels: int = MAX_PIXELS
) -> np.ndarray:
    """The values stored in an image or mask file, as an array; no intensity rule applied.

    Args:
        path: PNG, JPEG, BMP, GIF, TIFF or ``.npy`` file.
        what: "image" (Pillow's palette, CMYK, 1-bit and gray+alpha modes are converted to
            L, RGB or RGBA; 1-bit TIFFs become 0/255) or "mask" (values as stored: palette
            indices, 16-bit ids).
        memmap: map TIFF and ``.npy`` data instead of reading it into memory.
        max_pixels: largest image Pillow may decode.

    Returns:
        (H, W) or (H, W, C); a `numpy.memmap` for mapped files.

    Raises:
        MissingFileError: no such file.
        UnreadableFileError: the file cannot be decoded (named).
        DataError: not a 2-D image, or more than `max_pixels` pixels.
    """
    path = Path(path)
    if what not in ("image", "mask"):
        raise ValueError(
            f"Invalid value for argument `what`: expected 'image' or 'mask'. Received: {what!r}"
        )
    if not path.is_file():
        raise MissingFileError(f"{what} file not found: '{path}'")
    suffix = path.suffix.lower()
    arr = None
    if suffix == ".npy":
        try:
            arr = np.load(path, mmap_mode="r" if memmap else None, allow_pickle=False)
        except Exception as e:  # numpy raises several types for broken files
            raise UnreadableFileError.from_error(path, what, e) from None
    elif suffix in TIFF_SUFFIXES:
        arr = read_tiff(path, what, memmap)
    if arr is None:
        arr = _pillow(path, what, max_pixels)
    if arr.ndim not in (2, 3) or min(arr.shape[:2], default=0) < 1:
        raise DataError(
            f"{what.capitalize()} '{path}' has shape {arr.shape}; expected (H, W) or (H, W, C)"
        )
    if what == "image" and arr.dtype == np.bool_:  # 1-bit images: black and white
        arr = arr.astype(np.uint8) * np.uint8(255)
    return arr


def _source(path: Path, arr: np.ndarray) -> str:
    kind = ".npy" if path.suffix.lower() == ".npy" else path.suffix.lstrip(".").upper()
    kind = "TIFF" if kind == "TIF" else kind
    if arr.dtype.kind == "f" and kind != ".npy":
        return f"a float {kind}"
    return f"a {kind} of dtype {arr.dtype}"


# The one intensity rule (docs/data.md, "Image intensities"): an integer image is scaled by the
# full range of its unsigned 8- or 16-bit type; a float image must already lie in [0, 1]. Nothing
# else is guessed: a float's range (radiance, reflectance, background-subtracted or dB values) or
# a signed / 32-bit integer's "white" is known only to the user, and a per-image guess would make
# one intensity mean different things in different images, and differently at prediction time.
def check_intensity(image: Any, name: str | os.PathLike = "image", source: str = "") -> None:
    """Apply the intensity rule to stored pixels; a one-line `DataError` when they break it.

    uint8 and uint16 (either byte order) pass; floats must be finite and lie in [0, 1]
    (checked in row blocks of about 64 MiB, so a memory map is never copied whole); any
    other dtype is refused.

    Args:
        image: (H, W) or (H, W, C) array (a `numpy.memmap` too).
        name: the file (or "image") named in the message.
        source: how the pixels were stored, e.g. "a TIFF of dtype float32".
    """
    dtype = image.dtype
    source = source or f"an array of dtype {dtype}"
    if dtype.kind == "u" and dtype.itemsize in (1, 2):
        return
    if dtype.kind == "f":
        row_bytes = max(1, int(np.prod(image.shape[1:])) * dtype.itemsize)
        step = max(1, _ROW_BLOCK_BYTES // row_bytes)
        lo, hi, bad = np.inf, -np.inf, 0
        for r in range(0, image.shape[0], step):
            block = np.asarray(image[r : r + step])
            finite = np.isfinite(block)
            if not finite.all():
                bad += int(block.size - np.count_nonzero(finite))
                block = block[finite]
            if block.size:
                lo, hi = min(lo, float(block.min())), max(hi, float(block.max()))
        if bad:
            raise DataError(f"Image '{name}' contains NaN or Inf values ({bad} values)")
        if lo < 0 or hi > 1:
            raise DataError(
                f"Image '{name}' is {source} with values in [{lo:g}, {hi:g}]; float "
                "images must lie in [0, 1] (segzoo never guesses a float image's range): scale "
                "it first, e.g. divide 0..255 data by 255, or by your sensor's full-scale value"
            )
        return
    if dtype.kind in "iu":
        lo, hi = (image.min(), image.max()) if image.size else (0, 0)
        raise DataError(
            f"Image '{name}' is {source} with values in [{lo}, {hi}]; integer images must be "
            "unsigned 8 or 16 bit (scaled by 255 or 65535), because other integer types have "
            "no standard full scale: convert it to uint8/uint16, or to float32 in [0, 1]"
        )
    raise DataError(f"Image '{name}' is {source}; expected uint8, uint16 or float in [0, 1]")


def read_pixels(
    path: str | os.PathLike, memmap: bool = True, max_pixels: int = MAX_PIXELS
) -> np.ndarray:
    """The stored pixels of an image file, memory-mapped where the format allows, checked.

    What tiled inference reads: no float copy of the whole image (the predictor converts tile
    by tile); the intensity rule is checked here (`check_intensity`).

    Args:
        path: TIFF, ``.npy``, PNG, JPEG or BMP file.
        memmap: map TIFF/.npy data instead of reading it into memory.
        max_pixels: largest image Pillow may decode (PNG/JPEG/BMP).

    Returns:
        (H, W) or (H, W, C) uint8, uint16 or float (a `numpy.memmap` for mapped files).

    Raises:
        MissingFileError, UnreadableFileError, DataError: one line naming the file.
    """
    path = Path(path)
    arr = decode(path, "image", memmap=memmap, max_pixels=max_pixels)
    check_intensity(arr, path, _source(path, arr))
    return arr


def to_channels(arr: np.ndarray, path: str | os.PathLike, channels: int = 3) -> np.ndarray:
    """Stored pixels (H, W) or (H, W, C) as (H, W, `channels`): the one channel rule.

    `channels=3` (the default, RGB models): gray images are repeated to 3 channels and the
    alpha channel of RGBA is dropped, as photos expect. Any other count takes images with
    exactly that many channels (a 2-D image counts as 1): gray microscopy with 1, RGB-NIR
    with 4 (an RGBA file's fourth channel is then kept as data), 13-band satellite images
    with 13. Nothing else is converted: a colour image is never turned gray behind the
    user's back, nor a band dropped.

    Raises:
        DataError: the image has another channel count (names the file and `data.channels`).
    """
    if arr.ndim == 2:
        arr = arr[..., None]
    c = int(arr.shape[-1])
    if c == channels:
        return arr
    if channels == 3 and c in (1, 4):
        return np.repeat(arr, 3, axis=-1) if c == 1 else arr[..., :3]
    takes = "gray, RGB or RGBA images" if channels == 3 else f"{channels}-channel images only"
    raise DataError(
        f"Image '{path}' has {c} channel(s) (shape {tuple(arr.shape)}) but data.channels="
        f"{channels} takes {takes}; set data.channels={c} to train on {c}-channel images"
    )


def read_image_raw(path: str | os.PathLike, channels: int = 3) -> np.ndarray:
    """Decode an image without losing precision: uint8 (H, W, C) for 8-bit files, else float32.

    Intensities follow one rule for every source (`check_intensity`): unsigned 8-bit pixels
    are kept as uint8 (scaled by 1/255 later), unsigned 16-bit pixels (PNG, TIFF, uint16 .npy)
    are divided by 65535, float pixels (float TIFF, float .npy) must be finite and lie in
    [0, 1]; signed or 32-bit integer images are refused. Nothing is clipped. Channels follow
    `to_channels` (default 3: gray repeated, alpha dropped).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: unreadable file, unsupported shape, channel count or dtype, NaN/Inf
            values or floats outside [0, 1].
    """
    path = Path(path)
    arr = read_pixels(path, memmap=False)
    arr = to_channels(arr, path, channels)
    if arr.dtype.itemsize == 1:
        return np.ascontiguousarray(arr, np.uint8)
    if arr.dtype.kind == "u":
        return (arr / 65535.0).astype(np.float32)
    return np.ascontiguousarray(arr, np.float32)


def read_image(path: str | os.PathLike, channels: int = 3) -> np.ndarray:
    """Read an image as float32 (H, W, C) in [0, 1] (the models' input convention).

    Args:
        path: PNG/JPEG/BMP/TIFF (8 or 16 bit, gray, RGB or RGBA; float TIFF in [0, 1]) or
            .npy file.
        channels: the model's input channels (`to_channels`): 3 repeats gray images and
            drops alpha; any other count takes images with exactly that many channels.

    Returns:
        float32 array (H, W, channels) in [0, 1].

    Example:
        >>> read_image("photo.jpg").shape  # doctest: +SKIP
        (480, 640, 3)
    """
    arr = read_image_raw(path, channels)
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    return arr.astype(np.float32)


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a mask's raw values as int32 (H, W): 8- or 16-bit PNG/TIFF, palette PNG/TIFF
    (indices) or .npy, as stored (0/255 binary masks are mapped later, `num_classes` known).
    JPEG masks (lossy: binary only) are read as 1 where the channels' mean is >= 128, else 0.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: unreadable file, or a multi-channel mask whose channels differ.
    """
    path = Path(path)
    arr = decode(path, "mask")
    if path.suffix.lower() in JPEG_SUFFIXES:  # binary only (`zoo.data.folder.map_mask`)
        return ((arr.mean(axis=-1) if arr.ndim == 3 else arr) >= 128).astype(np.int32)
    if arr.dtype.kind not in "iub":
        raise DataError(f"Mask '{path}' has dtype {arr.dtype}; expected integers")
    if arr.ndim == 3:
        if not (arr[..., :1] == arr[..., : min(arr.shape[-1], 3)]).all():
            raise DataError(
                f"Mask '{path}' has {arr.shape[-1]} different channels; expected a single-channel "
                "(gray, 16-bit or palette) mask"
            )
        arr = arr[..., 0]
    return arr.astype(np.int32)
