"""Per-pixel loss weight maps (pure NumPy / SciPy).

- `none`: all ones.
- `class_balance`: w_c(x) = N / (K * n_c) for the class c of pixel x, where n_c counts class-c
  pixels over the whole training set, N = sum of n_c and K the number of classes present. The mean
  weight over all (non-ignored) training pixels is therefore exactly 1.
- `unet_border` (Ronneberger et al. 2015), on background pixels:
  w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2)), where d1 and d2 are the distances
  to the nearest and second-nearest object instance; foreground pixels get w_c(x) only.

Ignored pixels (`ignore_index`) get weight 0.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from scipy import ndimage


def class_counts(masks: Iterable[np.ndarray], num_classes: int) -> np.ndarray:
    """Pixel count per class over `masks` (binary masks count classes 0 and 1).

    Args:
        masks: class-id masks of any shape; values outside 0..num_classes-1 (ignored) are skipped.
        num_classes: 1 for binary masks, otherwise the number of classes.

    Returns:
        int64 array of length max(num_classes, 2).
    """
    k = max(int(num_classes), 2)
    total = np.zeros(k, np.int64)
    for m in masks:
        m = np.asarray(m).ravel()
        m = m[(m >= 0) & (m < k)]
        total += np.bincount(m.astype(np.intp, copy=False), minlength=k)[:k]  # intp: fast
    return total


def class_balance_weights(counts: np.ndarray) -> np.ndarray:
    """Inverse-frequency class weights N / (K * n_c); mean weight over pixels is 1.

    Args:
        counts: pixel count per class (e.g. from `class_counts`).

    Returns:
        float32 weights per class; classes absent from the data get weight 0.

    Example:
        >>> class_balance_weights(np.array([3, 1]))  # N=4, K=2: 4/6 and 4/2
        array([0.6666667, 2.       ], dtype=float32)
    """
    counts = np.asarray(counts, np.float64)
    present = counts > 0
    if not present.any():
        return np.ones_like(counts, np.float32)
    w = np.zeros_like(counts)
    w[present] = counts.sum() / (present.sum() * counts[present])
    return w.astype(np.float32)


def border_term(instances: np.ndarray, w0: float = 10.0, sigma: float = 5.0) -> np.ndarray:
    """w0 * exp(-(d1 + d2)^2 / (2 sigma^2)) on background pixels, 0 on objects.

    Args:
        instances: (H, W) integer instance ids, 0 = background.
        w0: amplitude of the border weight.
        sigma: width of the border weight, in pixels.

    Returns:
        float32 (H, W). Zero everywhere when fewer than two instances exist.
    """
    instances = np.asarray(instances)
    ids = np.unique(instances)
    ids = ids[ids != 0]
    out = np.zeros(instances.shape, np.float32)
    if len(ids) < 2:
        return out
    # Distances beyond `reach` only matter through exp(-reach^2 / (2 sigma^2)) < 2e-8, so each
    # instance's distance map is computed in its bounding box grown by `reach` (exact inside).
    reach = int(np.ceil(6 * sigma))
    h, w = instances.shape
    # Two running minima over the per-instance distance maps: d1 <= d2.
    d1 = np.full(instances.shape, np.inf)
    d2 = np.full(instances.shape, np.inf)
    boxes = ndimage.find_objects(instances)
    for i in ids:
        ys, xs = boxes[i - 1]
        win = (
            slice(max(ys.start - reach, 0), min(ys.stop + reach, h)),
            slice(max(xs.start - reach, 0), min(xs.stop + reach, w)),
        )
        d = np.full(instances.shape, np.inf)
        d[win] = ndimage.distance_transform_edt(instances[win] != i)
        d2 = np.minimum(d2, np.maximum(d1, d))
        d1 = np.minimum(d1, d)
    background = instances == 0
    out[background] = w0 * np.exp(-((d1[background] + d2[background]) ** 2) / (2.0 * sigma**2))
    return out


def instances_from_mask(mask: np.ndarray, ignore_index: int | None = None) -> np.ndarray:
    """Instance ids from a class mask: connected components of each foreground class.

    Touching objects of the same class merge into one instance; use instance masks when the gaps
    between touching objects matter.
    """
    mask = np.asarray(mask)
    out = np.zeros(mask.shape, np.int32)
    offset = 0
    for c in np.unique(mask):
        if c == 0 or (ignore_index is not None and c == ignore_index):
            continue
        labels, n = ndimage.label(mask == c)
        out[labels > 0] = labels[labels > 0] + offset
        offset += n
    return out


def weight_map(
    mask: np.ndarray,
    kind: str,
    class_weights: np.ndarray | None = None,
    instances: np.ndarray | None = None,
    w0: float = 10.0,
    sigma: float = 5.0,
    ignore_index: int | None = None,
) -> np.ndarray:
    """The weight map of one sample.

    Args:
        mask: (H, W) class ids (binary: 0/1).
        kind: "none", "class_balance" or "unet_border".
        class_weights: per-class weights w_c (`class_balance_weights`); required unless "none".
        instances: (H, W) instance ids for "unet_border" (default: `instances_from_mask`).
        w0: border weight amplitude.
        sigma: border weight width in pixels.
        ignore_index: pixels with this value get weight 0.

    Returns:
        float32 (H, W).
    """
    mask = np.asarray(mask)
    ignored = mask == ignore_index if ignore_index is not None else np.zeros(mask.shape, bool)
    if kind == "none":
        w = np.ones(mask.shape, np.float32)
    elif kind in ("class_balance", "unet_border"):
        if class_weights is None:
            raise ValueError(f"weight_map={kind!r} needs class_weights")
        cw = np.asarray(class_weights, np.float32)
        w = cw[np.clip(np.where(ignored, 0, mask), 0, len(cw) - 1)]
        if kind == "unet_border":
            inst = instances if instances is not None else instances_from_mask(mask, ignore_index)
            w = w + border_term(inst, w0, sigma) * (mask == 0)
    else:
        raise ValueError(
            f"Invalid weight_map={kind!r}; choose one of: none, class_balance, unet_border"
        )
    w[ignored] = 0.0
    return w.astype(np.float32)
