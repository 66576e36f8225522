"""TIFF decoding for `zoo.data.io.decode`: tifffile, memory-mapped when asked and possible.

Gray and RGB(A) images and palette masks are read here with their stored dtype (8/16-bit,
float), any number of samples, interleaved or planar (viewed as (H, W, C) without a copy);
TIFFs that need a color conversion are left to Pillow.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zoo.errors import DataError, UnreadableFileError

TIFF_SUFFIXES = (".tif", ".tiff")


def read_tiff(path: Path, what: str, memmap: bool) -> np.ndarray | None:
    """tifffile's decoding (memory-mapped when asked), or None for Pillow to decode.

    Gray and RGB(A) images (photometric minisblack/rgb) and palette masks (indices) are read
    by tifffile; other photometric interpretations (palette images, CMYK, YCbCr, min-is-white)
    need a color conversion, which Pillow does.
    """
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            photometric = getattr(series.keyframe, "photometric", None)
            plain = {tifffile.PHOTOMETRIC.MINISBLACK, tifffile.PHOTOMETRIC.RGB}
            if what == "mask":
                plain.add(tifffile.PHOTOMETRIC.PALETTE)
            if photometric not in plain:
                return None
            axes, shape = series.axes, series.shape
            arr = None
            if memmap:
                try:
                    arr = tifffile.memmap(path, mode="r")
                except ValueError:  # compressed or not contiguous: decode into a temp map
                    arr = None
            if arr is None:
                arr = series.asarray(out="memmap" if memmap else None)
    except Exception as e:  # tifffile raises many types for broken files
        raise UnreadableFileError.from_error(path, what, e) from None
    # Drop leading length-1 axes (a single page, plane, time point).
    while arr.ndim > 2 and arr.shape[0] == 1 and axes[0] not in "YX":
        arr, axes = arr[0], axes[1:]
    if axes in ("CYX", "SYX"):  # planar samples: viewed as (H, W, C), not copied
        arr, axes = np.moveaxis(arr, 0, -1), "YXS"
    if axes not in ("YX", "YXS", "YXC"):
        raise DataError(
            f"{what.capitalize()} '{path}' has TIFF axes {series.axes} and shape {shape}; "
            "expected a 2-D image (YX) with optional samples (YXS)"
        )
    return arr
