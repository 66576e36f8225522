"""Resizing label masks so their outlines stay where the resized image shows them.

`data.mask_interpolation` chooses how masks are resampled wherever the data pipeline resizes
them (the random resized crop, validation windows and `resize: resize`, images smaller than a
crop, `data.resample`):

- `nearest` (the default): the label of the nearest source pixel. Along curved and diagonal
  outlines an enlarged mask keeps the source pixels' staircase, whose corners stand off the
  smooth outline of the bilinearly enlarged image (along straight rows and columns the two
  options agree).
- `linear`: each output pixel takes the label that holds the most interpolation weight among
  the source pixels the image's resampling reads for it: the arg-max of the linearly resized
  one-hot encoding, as nnU-Net resamples segmentations (order 1); a 0/1 mask becomes its
  bilinear resize thresholded at 0.5. Outlines follow the image, but structures one source
  pixel wide that run diagonally come out thinner than with `nearest`.

Measured on the real datasets of docs/quality.md neither wins everywhere (its "Mask
resampling"), so `nearest` stays the default. With `linear` a weight map follows its mask pixel
by pixel (each pixel from the source pixel the mask's label came from); with `nearest` both
come from the nearest pixel. Rotation and elastic deformation (`data.augment.rotate` /
`elastic`) resample masks by nearest neighbour either way.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from PIL import Image

from zoo.data.config import MASK_INTERPOLATIONS

__all__ = ["MASK_INTERPOLATIONS", "resize_labels", "resize_labels_np", "resize_triplet"]


def _taps(n_in: tf.Tensor, n_out: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Along one side: the two source indices of each output pixel and the far one's weight,
    with half-pixel centres and clamped edges, as `tf.image.resize(method="bilinear")`."""
    scale = tf.cast(n_in, tf.float32) / float(n_out)
    src = (tf.range(n_out, dtype=tf.float32) + 0.5) * scale - 0.5
    src = tf.clip_by_value(src, 0.0, tf.cast(n_in - 1, tf.float32))
    lo = tf.cast(tf.floor(src), tf.int32)
    hi = tf.minimum(lo + 1, tf.cast(n_in, tf.int32) - 1)
    return lo, hi, src - tf.cast(lo, tf.float32)


def _choose(labels: tf.Tensor, size: tuple[int, int]):
    """The four source taps of every output pixel and, per channel, which of them to take."""
    shape = tf.shape(labels)
    y0, y1, fy = _taps(shape[0], size[0])
    x0, x1, fx = _taps(shape[1], size[1])

    def gather(t: tf.Tensor) -> list[tf.Tensor]:
        rows = [tf.gather(t, y, axis=0) for y in (y0, y1)]
        return [tf.gather(r, x, axis=1) for r in rows for x in (x0, x1)]

    cand = gather(labels)
    wy, wx = fy[:, None, None], fx[None, :, None]
    weights = [(1 - wy) * (1 - wx), (1 - wy) * wx, wy * (1 - wx), wy * wx]
    # tf.image.resize(method="nearest") takes the far tap from a fraction of 0.5 on.
    near = tf.cast(wy >= 0.5, tf.int32) * 2 + tf.cast(wx >= 0.5, tf.int32)
    scores = [w + 1e-5 * tf.cast(tf.equal(near, i), tf.float32) for i, w in enumerate(weights)]
    for i in range(4):  # each pair of taps with the same label adds the other's weight
        for j in range(i + 1, 4):
            same = tf.cast(tf.equal(cand[i], cand[j]), tf.float32)
            scores[i] += weights[j] * same
            scores[j] += weights[i] * same
    return gather, tf.argmax(tf.stack(scores), axis=0, output_type=tf.int32)


def _pick(cand: list[tf.Tensor], best: tf.Tensor) -> tf.Tensor:
    out = cand[0]
    for i in (1, 2, 3):
        out = tf.where(tf.equal(best, i), cand[i], out)
    return out


def resize_labels(labels: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """Resize an (h, w, K) label map to `size` by linear interpolation of its labels (TF ops).

    Each output pixel takes, channel by channel, the label that holds the most bilinear weight
    among its four source neighbours (half-pixel centres, as `tf.image.resize`; ties go to the
    nearest neighbour). That is the arg-max of the bilinearly resized one-hot encoding, found
    without knowing the number of classes, so an ignore label (e.g. 255) is kept like any other.

    Args:
        labels: (h, w, K) integer tensor: class ids (K = 1), or K 0/1 masks.
        size: output (height, width).

    Returns:
        (height, width, K) tensor of the labels' dtype.

    Example:
        >>> m = tf.constant([[1, 1], [1, 0]])[..., None]  # the centre's bilinear value: 0.75
        >>> resize_labels(m, (3, 3))[..., 0].numpy().tolist()
        [[1, 1, 1], [1, 1, 0], [1, 0, 0]]
    """
    gather, best = _choose(labels, size)
    return _pick(gather(labels), best)


def resize_triplet(image, mask, weight, size: tuple[int, int], mask_interpolation: str = "nearest"):
    """Resize one sample's image (bilinear), mask (`mask_interpolation`) and weight map to
    `size`; the mask comes back int32. The weight map takes each pixel from the source pixel
    the mask's (first) channel took it from, so ignored pixels keep weight 0."""
    image = tf.image.resize(image, size, method="bilinear")
    if mask_interpolation == "linear":
        mask = tf.cast(mask, tf.int32)
        gather, best = _choose(mask, size)
        return image, _pick(gather(mask), best), _pick(gather(weight), best[..., :1])
    k = mask.shape[-1]  # every mask channel (K labels in multilabel data) moves like one mask
    labels = tf.concat([tf.cast(mask, tf.float32), weight], axis=-1)
    labels = tf.image.resize(labels, size, method="nearest")
    return image, tf.cast(tf.round(labels[..., :k]), tf.int32), labels[..., k:]


def resize_labels_np(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an (H, W) or (H, W, K) label map to `size` (height, width) the way Pillow's
    bilinear filter resizes the image (`zoo.data.folder`): each label present is resized as a
    0/1 float map and every pixel takes the label with the largest value (ties: the smaller
    label id). Pillow's filter widens when shrinking, so a downscaled outline follows the
    downscaled image too.

    Example:
        >>> resize_labels_np(np.array([[0, 3], [0, 3]]), (1, 4)).tolist()
        [[0, 0, 3, 3]]
    """
    if labels.ndim == 3:
        chans = [resize_labels_np(labels[..., i], size) for i in range(labels.shape[-1])]
        return np.stack(chans, -1)
    h, w = size
    if labels.shape == (h, w):
        return labels
    values = np.unique(labels)
    best = np.full((h, w), -1.0, np.float32)
    out = np.zeros((h, w), labels.dtype)
    for v in values:  # few labels per mask: one float resize each
        plane = Image.fromarray((labels == v).astype(np.float32))
        score = np.asarray(plane.resize((w, h), Image.BILINEAR))
        take = score > best
        out[take], best[take] = v, score[take]
    return out
