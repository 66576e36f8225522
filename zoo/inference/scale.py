"""The pixel scale a model was trained at, and resampling image regions to it.

**The rule.** ``model.metadata["input_scale"] = [sy, sx]``: training pixels per native pixel,
per axis (a single number means the same on both axes). A folder dataset with
``resize: resize`` scales image ``i`` (native ``h_i x w_i``) to ``image_size = (H, W)``, a factor
``(H / h_i, W / w_i)`` that differs per image; the recorded scale is the per-axis **median** of
those factors over the training images (`input_scale_from_sizes`), i.e. the scale of the
typical training image. With ``resize: crop`` images keep their native resolution (factor 1),
or ``resample`` times it when the data config resamples them, unless smaller than a crop, in
which case they were upscaled by ``max(H / h, W / w)``; the median of that factor is recorded.
Generated data (shapes) is 1. Random zoom augmentation (``augment.scale``) is centred on the
base scale and not part of it.

At prediction, an image of native size ``h x w`` is seen at ``round(h * sy) x round(w * sx)``
(halves round up)
pixels (`scaled_size`), tiled there, and every output pixel is interpolated back to the
native grid, so a model trained on images shrunk 4x sees new native-resolution images
shrunk 4x too, whatever their size. This is the right rule when a pixel has a fixed physical
size (microscopy, remote sensing, scans); for photos whose objects scale with the frame, pass
``scale`` per image (e.g. ``image_size / native size``) instead.

**Resampling** uses Pillow's bilinear filter (antialiased when shrinking), the filter the
folder dataset resized the training images with, on the same dtype (uint8 images as uint8), so
the model sees exactly the pixels training would have produced. A tile's pixels are computed
from the native region under it plus a margin larger than the filter's support, which gives
the same values as resampling the whole image and cropping (`resample_region`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from PIL import Image


def input_scale_from_sizes(
    native_sizes: Iterable[Sequence[int]],
    image_size: Sequence[int],
    resize: str = "resize",
    resample: float = 1.0,
) -> list[float]:
    """The `input_scale` metadata of a model trained on images of `native_sizes`.

    Args:
        native_sizes: (height, width) of every training image before resizing.
        image_size: the data config's [height, width].
        resize: the folder data config's `resize` ("resize" or "crop").
        resample: the folder data config's `resample` (crop mode: images resampled by this
            factor before cropping).

    Returns:
        ``[sy, sx]``, training pixels per native pixel (median over the images).

    Example:
        >>> input_scale_from_sizes([(1024, 2048), (1000, 2000), (2048, 2048)], (256, 512))
        [0.25, 0.25]
    """
    sizes = [(int(h), int(w)) for h, w in native_sizes]
    if not sizes:
        raise ValueError("Invalid value for argument `native_sizes`: no images. Received: []")
    th, tw = (int(s) for s in image_size)
    if resize == "resize":
        factors = np.array([(th / h, tw / w) for h, w in sizes], np.float64)
    elif resize == "crop":
        r = float(resample)
        f = [r * max(th / (h * r), tw / (w * r), 1.0) for h, w in sizes]
        factors = np.array([(x, x) for x in f], np.float64)
    else:
        raise ValueError(
            "Invalid value for argument `resize`: expected one of ('resize', 'crop'). "
            f"Received: resize={resize!r}"
        )
    return [float(np.median(factors[:, 0])), float(np.median(factors[:, 1]))]


def resolve_scale(model: Any, scale: Any = None) -> tuple[float, float]:
    """(sy, sx) to predict at: `scale` if given, else the model's `input_scale`, else 1."""
    if scale is None:
        scale = getattr(model, "metadata", {}).get("input_scale", 1.0)
    if isinstance(scale, (int, float)) and not isinstance(scale, bool):
        pair = (float(scale), float(scale))
    elif isinstance(scale, (list, tuple)) and len(scale) == 2:
        pair = (float(scale[0]), float(scale[1]))
    else:
        pair = None
    if pair is None or not all(math.isfinite(s) and s > 0 for s in pair):
        raise ValueError(
            "Invalid value for argument `scale`: expected a positive number or [sy, sx] "
            f"(model pixels per native pixel). Received: scale={scale!r}"
        )
    return pair


def scaled_size(size: Sequence[int], scale: Sequence[float]) -> tuple[int, int]:
    """The (height, width) the model sees for a native `size` at `scale`."""
    return tuple(max(1, int(math.floor(n * s + 0.5))) for n, s in zip(size[:2], scale))


def to_float(region: np.ndarray) -> np.ndarray:
    """Pixels in [0, 1] as float32: uint8 / 255, uint16 / 65535, floats as they are."""
    if region.dtype.kind == "u" and region.dtype.itemsize == 1:
        return region.astype(np.float32) * np.float32(1 / 255)
    if region.dtype.kind == "u" and region.dtype.itemsize == 2:  # either byte order
        return region.astype(np.float32) * np.float32(1 / 65535)
    return region.astype(np.float32, copy=False)


def match_channels(region: np.ndarray, channels: int) -> np.ndarray:
    """(h, w, C) pixels with `channels` channels, by the rule the training reader applies.

    Gray images are repeated to 3 channels and the alpha channel of RGBA is dropped when the
    model takes 3 (as `zoo.data.read_image` does); any other mismatch was rejected before.
    """
    if region.ndim == 2:
        region = region[..., None]
    c = region.shape[-1]
    if c == channels:
        return region
    if channels == 3 and c == 1:
        return np.repeat(region, 3, axis=-1)
    if channels == 3 and c == 4:
        return region[..., :3]
    raise ValueError(f"cannot give {c} image channels to a model taking {channels}")


def resample_region(
    image: np.ndarray,
    box: tuple[float, float, float, float],
    out_hw: tuple[int, int],
    channels: int,
) -> np.ndarray:
    """Pixels of the native `box` (y0, x0, y1, x1) resampled to `out_hw`, float32 (h, w, C).

    Equals cropping the Pillow-bilinear resample of the whole image: the region read around
    the box is wider than the filter's support, and Pillow's `box` keeps the sample
    positions of the whole-image resize.
    """
    y0, x0, y1, x1 = box
    oh, ow = out_hw
    h, w = image.shape[:2]
    # Bilinear support is 1 input pixel, scaled by the shrink factor when shrinking.
    my = int(math.ceil(max((y1 - y0) / oh, 1.0))) + 2
    mx = int(math.ceil(max((x1 - x0) / ow, 1.0))) + 2
    ry0, ry1 = max(0, int(math.floor(y0)) - my), min(h, int(math.ceil(y1)) + my)
    rx0, rx1 = max(0, int(math.floor(x0)) - mx), min(w, int(math.ceil(x1)) + mx)
    region = match_channels(np.asarray(image[ry0:ry1, rx0:rx1]), channels)
    # Clamped: x1 = (x0 + w) * W / w can exceed W by a rounding error, which Pillow rejects.
    local = (
        max(x0 - rx0, 0.0),
        max(y0 - ry0, 0.0),
        min(x1 - rx0, float(rx1 - rx0)),
        min(y1 - ry0, float(ry1 - ry0)),
    )
    if region.dtype == np.uint8 and region.shape[-1] == 3:
        img = Image.fromarray(np.ascontiguousarray(region), "RGB")
        out = np.asarray(img.resize((ow, oh), Image.BILINEAR, box=local))
        return to_float(out)
    planes = []
    for c in range(region.shape[-1]):
        plane = region[..., c]
        if plane.dtype == np.uint8:
            img = Image.fromarray(np.ascontiguousarray(plane), "L")
        else:
            img = Image.fromarray(np.ascontiguousarray(to_float(plane)), "F")
        planes.append(to_float(np.asarray(img.resize((ow, oh), Image.BILINEAR, box=local))))
    return np.stack(planes, axis=-1)
