"""Pure statistics behind the dataset fingerprint (per image, orientation, fluorescence cues)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

THUMB = 8  # orientation thumbnails are THUMB x THUMB block means
ORIENTATION_THRESHOLD = 2.5  # RMS t-statistic; ~1 when flips leave the statistics unchanged
MIN_IMAGES_FOR_ORIENTATION = 4
MIN_OBJECT_AREA = 9  # px; smaller components are left out of the object statistics
MIN_ASYMMETRY = 0.1  # mean flip difference / content variation below this does not count
WIDTH_WINDOW = 512  # px; `ridge_widths` measures larger images in one window of this size
PIXELS_PER_IMAGE = 4096  # pixels sampled per image for the intensity percentiles
GRAY_GRID_PIXELS = 4_000_000  # at most this many pixels per image for gray-level statistics


def summary(values: Sequence[float]) -> dict[str, float]:
    if len(values) == 0:
        return {"count": 0, "min": 0.0, "p10": 0.0, "median": 0.0, "p90": 0.0, "max": 0.0}
    v = np.asarray(values, np.float64)
    return {
        "count": int(v.size),
        "min": float(v.min()),
        "p10": float(np.percentile(v, 10)),
        "median": float(np.median(v)),
        "p90": float(np.percentile(v, 90)),
        "max": float(v.max()),
    }


def ridge_widths(fg: np.ndarray, rng: np.random.Generator, limit: int = 2048) -> np.ndarray:
    """Local widths (px) of the foreground structures, at most `limit` of them (sampled).

    At each ridge pixel (a local maximum of the distance to the background) the structure is
    ``2 * distance - 1`` px wide: exact for odd widths, 1 less for even ones. A ribbon gives
    one value per pixel of its length, a round object few, so the low quantiles tell how thin
    the thin structures are. Components under `MIN_OBJECT_AREA` px are left out. Images larger
    than `WIDTH_WINDOW` px a side are measured in one window of that size around a random
    foreground pixel: the distance transform of a whole 4 Mpx mask costs ~0.5 s.
    """
    h, w = fg.shape
    ys, xs = np.nonzero(fg) if max(h, w) > WIDTH_WINDOW else ((), ())
    if len(ys):
        i = int(rng.integers(len(ys)))
        y0 = min(max(int(ys[i]) - WIDTH_WINDOW // 2, 0), max(h - WIDTH_WINDOW, 0))
        x0 = min(max(int(xs[i]) - WIDTH_WINDOW // 2, 0), max(w - WIDTH_WINDOW, 0))
        fg = fg[y0 : y0 + WIDTH_WINDOW, x0 : x0 + WIDTH_WINDOW]
    labels, n = ndimage.label(fg)
    if n == 0:
        return np.zeros(0, np.float32)
    keep = _bincount(labels)[labels] >= MIN_OBJECT_AREA
    keep &= labels > 0
    dist = ndimage.distance_transform_edt(keep)
    ridge = keep & (dist >= ndimage.maximum_filter(dist, size=3))
    widths = (2.0 * dist[ridge] - 1.0).astype(np.float32)
    if widths.size > limit:
        widths = rng.choice(widths, limit, replace=False)
    return widths


def _bincount(values: np.ndarray, minlength: int = 0) -> np.ndarray:
    """np.bincount of non-negative integers of any dtype; given int32 it is ~30x slower than
    given intp (a 24-megapixel mask: 1.2 s against 0.04 s)."""
    return np.bincount(np.asarray(values).ravel().astype(np.intp, copy=False), minlength=minlength)


def _unit(image: np.ndarray) -> tuple[np.ndarray, float]:
    """(image as (H, W, C) in its stored dtype, the factor to [0, 1] units). A float copy of
    a 24-megapixel photo costs more than every statistic taken from it."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    return image, {np.dtype(np.uint8): 1 / 255.0, np.dtype(np.uint16): 1 / 65535.0}.get(
        image.dtype, 1.0
    )


def _thumb(arr: np.ndarray) -> np.ndarray:
    """THUMB x THUMB block means of a 2-D float array (box filter, any input size)."""
    return np.asarray(
        Image.fromarray(np.ascontiguousarray(arr, np.float32)).resize((THUMB, THUMB), Image.BOX),
        np.float64,
    )


def _flip_stats(thumbs: np.ndarray, transform: str) -> tuple[float, float]:
    """(RMS over cells of the t-statistic of d = thumb - transform(thumb) across images,
    RMS of the mean d relative to the RMS content variation of the thumbnails)."""
    if transform == "vertical":
        other = thumbs[:, ::-1, :]
    elif transform == "horizontal":
        other = thumbs[:, :, ::-1]
    else:
        other = np.transpose(thumbs, (0, 2, 1))
    diff = (thumbs - other).reshape(len(thumbs), -1)
    mean = diff.mean(axis=0)
    flat = thumbs.reshape(len(thumbs), -1)
    spread = np.sqrt(np.mean((flat - flat.mean(axis=1, keepdims=True)) ** 2)) + 1e-12
    size = float(np.sqrt(np.mean(mean**2)) / spread)
    sd = diff.std(axis=0, ddof=1)
    ok = sd > 1e-9
    if not ok.any():
        # The same difference in every image: none at all, or a perfectly consistent one.
        return (0.0 if np.allclose(mean, 0) else float("inf")), size
    z = mean[ok] / (sd[ok] / np.sqrt(len(thumbs)))
    return float(np.sqrt(np.mean(z**2))), size


def orientation_scores(
    image_thumbs: np.ndarray, mask_thumbs: np.ndarray | None = None
) -> dict[str, Any]:
    """Does the data look the same after a vertical flip, a horizontal flip, a transpose?

    Each image (and mask) is reduced to THUMB x THUMB block means, images standardized. If a
    flip F leaves the data's distribution unchanged, d_i = thumb_i - F(thumb_i) has mean zero in
    every cell, whatever the content; a layout prior (sky at the top, anatomy facing one way,
    objects resting on a floor) gives a mean consistently away from zero. Two numbers per flip:
    the score, the RMS over cells of the one-sample t-statistic of d across images (about 1
    without orientation, each z being ~N(0, 1); it grows with sqrt(#images) with one), and the
    size of the mean asymmetry relative to the thumbnails' content variation (a consistent but
    tiny asymmetry, e.g. data a few pixels off-centre, is no reason to avoid a flip). A flip is
    ruled out when, for the images or the masks, score >= ORIENTATION_THRESHOLD and size >=
    MIN_ASYMMETRY. `oriented` rules out vertical flips / 90-degree turns (vertical or transpose),
    `left_right` horizontal flips; with fewer than MIN_IMAGES_FOR_ORIENTATION images both are
    None. This detects layout orientation, not that of individual objects at random places.
    """
    n = len(image_thumbs)
    out: dict[str, Any] = {"n": n, "threshold": ORIENTATION_THRESHOLD}
    if n < MIN_IMAGES_FOR_ORIENTATION:
        out.update(vertical=None, horizontal=None, transpose=None, oriented=None, left_right=None)
        return out
    feats = [image_thumbs]
    if mask_thumbs is not None and np.ptp(mask_thumbs) > 0:
        feats.append(mask_thumbs)
    broken = {}
    for name in ("vertical", "horizontal", "transpose"):
        stats = [_flip_stats(f, name) for f in feats]
        out[name] = round(max(t for t, _ in stats), 3)
        out[f"{name}_size"] = round(max(a for _, a in stats), 3)
        broken[name] = any(t >= ORIENTATION_THRESHOLD and a >= MIN_ASYMMETRY for t, a in stats)
    out["oriented"] = broken["vertical"] or broken["transpose"]
    out["left_right"] = broken["horizontal"]
    return out


def microscopy_cues(
    channels: int,
    storage: str,
    bg_levels: Sequence[float],
    dark_fractions: Sequence[float],
    fg_contrasts: Sequence[float],
    bg_above_fg: Sequence[float] = (),
) -> dict[str, Any]:
    """Fluorescence-likeness from cheap cues (each a named boolean in the result).

    - single channel (gray);
    - dark background: the per-image median sits in the bottom 20% of the image's 1-99.5
      percentile range, and more than half the pixels are in the bottom 25%;
    - bright objects: foreground brighter than background by > 0.5 background std (median
      over images);
    - high bit depth: 16-bit or float files;
    - objects brightest: under 5% of the background is brighter than the foreground's median
      (median over images; several classes: each class against the rest of the image, the
      worst class counted). Stained objects are the bright part of a fluorescence image; a
      scan whose labelled tissue sits between darker and brighter unlabelled tissue (gray
      matter in a T1 MRI: white matter is brighter) is not fluorescence-like, whatever its
      dark surroundings. Without measurements (no foreground) the cue does not veto.
    `likely` needs a dark background, objects that are the brightest structures and one other
    cue: intensity augmentations then matter (exposure and staining vary between
    acquisitions).
    """
    single = channels == 1
    dark = bool(
        bg_levels and float(np.median(bg_levels)) < 0.2 and float(np.median(dark_fractions)) > 0.5
    )
    bright = bool(fg_contrasts and float(np.median(fg_contrasts)) > 0.5)
    deep = storage == "float"
    brightest = not bg_above_fg or float(np.median(bg_above_fg)) < 0.05
    likely = dark and brightest and (single or bright or deep)
    return {
        "likely": likely,
        "single_channel": single,
        "dark_background": dark,
        "bright_objects": bright,
        "objects_brightest": brightest,
        "high_bit_depth": deep,
        "background_level": round(float(np.median(bg_levels)), 4) if bg_levels else None,
    }


def per_image(
    image: np.ndarray,
    mask: np.ndarray,
    instances: np.ndarray | None,
    num_classes: int,
    ignore_index: int | None,
    rng: np.random.Generator,
) -> dict[str, Any]:
    img, unit = _unit(image)
    h, w = img.shape[:2]
    k = max(num_classes, 2)
    valid = (mask >= 0) & (mask < k)
    if ignore_index is not None:
        valid &= mask != ignore_index
    counts = _bincount(mask[valid], k)[:k]
    idx = rng.integers(0, h * w, size=min(PIXELS_PER_IMAGE, h * w))
    pixels = img.reshape(-1, img.shape[-1])[idx].astype(np.float32) * np.float32(unit)
    # The gray-level statistics (and the orientation thumbnail) of a photo of many megapixels
    # come from a regular grid of at most GRAY_GRID_PIXELS: its quantiles, medians and block
    # means barely move, and a 24-megapixel photo costs 1 s instead of 3. Images up to that
    # size (every table dataset) are used whole.
    step = max(1, math.ceil(math.sqrt(h * w / GRAY_GRID_PIXELS)))
    g = img[::step, ::step].mean(axis=-1, dtype=np.float32) * np.float32(unit)
    m, ok = mask[::step, ::step], valid[::step, ::step]
    sub = _bincount(m[ok], k)[:k]
    lo, med, hi = np.percentile(g, [1, 50, 99.5])
    span = max(hi - lo, 1e-6)
    fg = ok & (m > 0)
    bg = ok & (m == 0)
    contrast = above = None
    # Each foreground class's median gray level (None where absent): with several classes
    # the union's median would move with the classes' proportions, not with the exposure.
    fg_levels = [float(np.median(g[m == c])) if sub[c] else None for c in range(1, k)]
    if fg.any() and bg.any():
        contrast = float((g[fg].mean() - g[bg].mean()) / (g[bg].std() + 1e-6))
        # Each foreground class against the rest of the image (the binary rule, one class at
        # a time): the worst class decides. White matter brighter than gray matter in a T1
        # scan vetoes it, as it does when gray matter alone is labelled.
        above = max(
            float(np.mean(g[ok & (m != c)] > np.median(g[m == c]))) for c in range(1, k) if sub[c]
        )
    extents, diameters, border = [], [], 0
    for c in range(1, k):
        if instances is not None:
            labels = np.where(mask == c, instances, 0)
        else:
            labels, _ = ndimage.label(mask == c)
        ids = np.unique(labels)
        ids = ids[ids > 0]
        if not len(ids):
            continue
        if ids[-1] >= labels.size:  # sparse instance ids (e.g. hashes): number them 1..n
            labels = np.searchsorted(np.concatenate([[0], ids]), labels)
            ids = np.arange(1, len(ids) + 1)
        areas = _bincount(labels)[ids]  # pixels per object
        boxes = ndimage.find_objects(labels.astype(np.int64))
        for i, area in zip(ids, areas):
            if area < MIN_OBJECT_AREA:  # label specks would dominate the small quantiles
                continue
            ys, xs = boxes[int(i) - 1]
            extents.append(max(ys.stop - ys.start, xs.stop - xs.start))
            diameters.append(2.0 * np.sqrt(area / np.pi))
            border += int(ys.start == 0 or xs.start == 0 or ys.stop == h or xs.stop == w)
    fgmask = valid & (mask > 0)
    touches = bool(fgmask[0].any() or fgmask[-1].any() or fgmask[:, 0].any() or fgmask[:, -1].any())
    std_thumb = _thumb(g)
    std_thumb = (std_thumb - std_thumb.mean()) / (std_thumb.std() + 1e-6)
    return {
        "size": (h, w),
        "channels": int(img.shape[-1]),
        "gray": bool(img.shape[-1] == 1 or (img == img[..., :1]).all()),
        "counts": counts,
        "pixels": pixels,
        "bg_level": float((med - lo) / span),
        "dark_fraction": float(np.mean(g < lo + 0.25 * span)),
        "contrast": contrast,
        "bg_above_fg": above,
        "fg_levels": fg_levels,
        "extents": extents,
        "diameters": diameters,
        "widths": ridge_widths(fgmask, rng),
        "border_objects": border,
        "touches": touches,
        "thumb": std_thumb,
        "mask_thumb": _thumb(fgmask.astype(np.float32)),
        "uint8": np.asarray(image).dtype == np.uint8,
    }


def label_union(labels: np.ndarray, ignore: int | None) -> tuple[np.ndarray, None, np.ndarray]:
    """(union mask, no instances, [[ones per label], [valid pixels per label]]) of one (H, W, K)
    multilabel mask: foreground where any label is 1; ignored where every label is ignored."""
    ones = labels == 1
    union = ones.any(-1).astype(np.int32)
    valid = np.ones_like(ones) if ignore is None else labels != ignore
    if ignore is not None:
        union[~valid.any(-1)] = ignore
    return union, None, np.stack([ones.sum((0, 1)), valid.sum((0, 1))])
