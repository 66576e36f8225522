"""The tf.data pipeline: in-memory samples -> deterministic, resumable, augmented batches.

All decoded samples live in memory as flat buffers (one per field) plus per-sample offsets and
shapes, so samples of different sizes share one code path and every per-sample step is a TF op.

Determinism: batch s of the training stream belongs to epoch e = s // steps_per_epoch. Epoch e
visits the first steps_per_epoch * batch samples of a permutation seeded by (seed, e) only, and
every random augmentation decision of a sample is drawn with stateless ops seeded by
(seed, e, sample index). Starting at `start_step` therefore skips whole epochs arithmetically and
then skips inside the first epoch, without generating the skipped batches.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from zoo.data import elastic
from zoo.data.config import AugmentConfig
from zoo.data.elastic import rotate
from zoo.data.resample import resize_triplet

# Salts keep the permutation and augmentation streams independent for the same (seed, epoch).
_PERM_SALT = 0x5EED
_AUG_SALT = 0xA06


@dataclass
class Samples:
    """Decoded samples of one split, ready for the pipeline.

    Attributes:
        images: per-sample (H, W, C) arrays, uint8 (0..255) or float32 in [0, 1]; the same C
            for every sample.
        masks: per-sample (H, W) int class ids, or (H, W, K) 0/1 labels (multilabel; the same
            K for every sample).
        weights: per-sample (H, W) float32 weight maps.
    """

    images: Sequence[np.ndarray]
    masks: Sequence[np.ndarray]
    weights: Sequence[np.ndarray]

    def __len__(self) -> int:
        return len(self.images)


class SampleStore:
    """Flat in-memory buffers of a `Samples` set with a TF random-access `load(index)`."""

    def __init__(self, samples: Samples):
        n = len(samples)
        if n == 0:
            raise ValueError("SampleStore needs at least one sample")
        hw = np.array([im.shape[:2] for im in samples.images], np.int64)
        for i in range(n):
            shape = tuple(hw[i])
            if samples.masks[i].shape[:2] != shape or samples.weights[i].shape[:2] != shape:
                raise ValueError(f"sample {i}: image, mask and weight map sizes differ")
        channels = {int(im.shape[2]) if im.ndim == 3 else 1 for im in samples.images}
        if len(channels) != 1:
            raise ValueError(f"samples have different channel counts: {sorted(channels)}")
        labels = {int(m.shape[2]) if np.ndim(m) == 3 else 1 for m in samples.masks}
        if len(labels) != 1:
            raise ValueError(f"masks have different channel counts: {sorted(labels)}")
        self.size = n
        self.hw = hw  # (n, 2) stored heights and widths
        self.channels = channels.pop()
        self.mask_channels = labels.pop()  # K labels (multilabel), else 1
        self.uint8 = all(im.dtype == np.uint8 for im in samples.images)

        def as_stored(im: np.ndarray) -> np.ndarray:
            if self.uint8:
                return im
            # Mixed sources: everything becomes float in [0, 1].
            return im.astype(np.float32) / 255.0 if im.dtype == np.uint8 else im.astype(np.float32)

        pix = hw[:, 0] * hw[:, 1]
        offsets = np.concatenate([[0], np.cumsum(pix)[:-1]]).astype(np.int64)
        self._hw = tf.constant(hw)
        self._off = tf.constant(offsets)
        self._images = tf.constant(
            np.concatenate([as_stored(np.asarray(im)).ravel() for im in samples.images])
        )
        self._masks = tf.constant(
            np.concatenate([np.asarray(m, np.int32).ravel() for m in samples.masks])
        )
        self._weights = tf.constant(
            np.concatenate([np.asarray(w, np.float32).ravel() for w in samples.weights])
        )

    def load(self, index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """(image f32 (h,w,C) in [0,1], mask int32 (h,w,1) or (h,w,K), weight f32 (h,w,1)) of
        one sample."""
        hw = self._hw[index]
        h, w = hw[0], hw[1]
        o = self._off[index]
        n = h * w
        c = self.channels
        image = tf.reshape(self._images[o * c : (o + n) * c], tf.stack([h, w, c]))
        image = tf.cast(image, tf.float32)
        if self.uint8:
            image = image / 255.0
        k = self.mask_channels
        mask = tf.reshape(self._masks[o * k : (o + n) * k], tf.stack([h, w, k]))
        weight = tf.reshape(self._weights[o : o + n], tf.stack([h, w, 1]))
        return image, mask, weight


def epoch_permutation(seed: int | tf.Tensor, epoch: int | tf.Tensor, n: int) -> tf.Tensor:
    """The sample order of one epoch: a permutation of range(n) depending only on (seed, epoch)."""
    key = tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)])
    key = tf.random.experimental.stateless_fold_in(key, _PERM_SALT)
    return tf.argsort(tf.random.stateless_uniform([n], seed=key), stable=True)


def distinct_windows(hw: np.ndarray, size: tuple[int, int]) -> int:
    """How many non-overlapping `size` crops the images of heights and widths `hw` (n, 2)
    hold: at least one each (a smaller image is one crop of itself).

    Example:
        >>> distinct_windows(np.array([[900, 1200], [100, 100]]), (128, 128))
        64
    """
    hw = np.asarray(hw, np.int64).reshape(-1, 2)
    per = np.maximum(hw[:, 0] // size[0], 1) * np.maximum(hw[:, 1] // size[1], 1)
    return int(per.sum())


def _window(h: tf.Tensor, w: tf.Tensor, size: tuple[int, int]) -> tuple[tf.Tensor, tf.Tensor]:
    """Base crop window: the whole stored image, or at most `size` (crop mode)."""
    return tf.minimum(h, size[0]), tf.minimum(w, size[1])


def _starts(n: int, s: int) -> list[int]:
    """Window starts along a side of n pixels: windows of s that cover it, the last one flush
    with the far edge (one window at 0 when the side is not longer than s)."""
    if n <= s:
        return [0]
    return [min(i * s, n - s) for i in range(-(-n // s))]


def eval_windows(hw: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(index, y0, x0) of the validation windows: each stored image covered by `size` windows.

    Images no larger than `size` give one window (the whole image); larger ones (crop mode)
    give a grid whose last row and column are flush with the image's edges, so every pixel
    is validated (where the grid does not divide the image, the last windows overlap the
    ones before them and those pixels count twice).
    """
    rows = [
        (i, y0, x0)
        for i, (h, w) in enumerate(np.asarray(hw, np.int64).tolist())
        for y0 in _starts(h, size[0])
        for x0 in _starts(w, size[1])
    ]
    return np.asarray(rows, np.int64).reshape(-1, 3)


def window_view(
    image, mask, weight, y0, x0, size: tuple[int, int], mask_interpolation: str = "nearest"
):
    """Validation transform: the base window at (y0, x0), resized to `size` (identity if the
    window already is; the mask by `mask_interpolation`, `zoo.data.resample`)."""
    shape = tf.shape(mask, out_type=tf.int64)
    ch, cw = _window(shape[0], shape[1], size)
    image = image[y0 : y0 + ch, x0 : x0 + cw]
    mask = mask[y0 : y0 + ch, x0 : x0 + cw]
    weight = weight[y0 : y0 + ch, x0 : x0 + cw]
    image, mask, weight = resize_triplet(image, mask, weight, size, mask_interpolation)
    return _finish(image, mask, weight, size)


def _finish(image, mask, weight, size):
    image = tf.ensure_shape(image, [size[0], size[1], image.shape[-1]])
    mask = tf.ensure_shape(tf.cast(mask, tf.int32), [size[0], size[1], mask.shape[-1]])
    weight = tf.ensure_shape(weight, [size[0], size[1], 1])
    return {"image": image, "mask": mask, "weight": weight}


def augment(
    image,
    mask,
    weight,
    key: tf.Tensor,
    size: tuple[int, int],
    cfg: AugmentConfig,
    mask_interpolation: str = "nearest",
):
    """Random resized crop, flips, rot90, rotation, elastic deformation (all fields together);
    gamma, brightness, contrast and noise (image only).

    Any number of image channels: gamma and brightness change all of them alike; contrast
    scales an RGB image around its mean, other images each channel around its own mean; noise
    is drawn per pixel and channel.

    Args:
        image, mask, weight: one sample, (h, w, C) tensors (C known statically); the mask
            has 1 channel, or K (multilabel): every channel moves like the mask.
        key: int64 (2,) stateless seed of this sample (derived from seed, epoch, index).
        size: output (height, width).
        cfg: augmentation options.
        mask_interpolation: how the resized crop resamples the mask (`zoo.data.resample`).

    Returns:
        dict with "image", "mask", "weight" of spatial size `size`.
    """
    keys = tf.random.experimental.stateless_split(key, 8)
    shape = tf.shape(mask, out_type=tf.int64)
    h, w = shape[0], shape[1]
    bh, bw = _window(h, w, size)
    if cfg.enabled:
        s = tf.random.stateless_uniform([], keys[0], cfg.scale[0], cfg.scale[1], tf.float64)
        side = tf.sqrt(s)
        ch = tf.maximum(tf.cast(tf.round(side * tf.cast(bh, tf.float64)), tf.int64), 1)
        cw = tf.maximum(tf.cast(tf.round(side * tf.cast(bw, tf.float64)), tf.int64), 1)
        u = tf.random.stateless_uniform([2], keys[1], 0.0, 1.0, tf.float64)
        y0 = tf.cast(tf.floor(u[0] * tf.cast(h - ch + 1, tf.float64)), tf.int64)
        x0 = tf.cast(tf.floor(u[1] * tf.cast(w - cw + 1, tf.float64)), tf.int64)
    else:
        ch, cw = bh, bw
        y0, x0 = (h - ch) // 2, (w - cw) // 2
    image = image[y0 : y0 + ch, x0 : x0 + cw]
    mask = mask[y0 : y0 + ch, x0 : x0 + cw]
    weight = weight[y0 : y0 + ch, x0 : x0 + cw]
    image, mask, weight = resize_triplet(image, mask, weight, size, mask_interpolation)
    if not cfg.enabled:
        return _finish(image, mask, weight, size)
    # One stacked tensor so geometric ops are applied identically to every field.
    stack = tf.concat([image, weight, tf.cast(mask, tf.float32)], axis=-1)
    u = tf.random.stateless_uniform([2], keys[2])
    if cfg.hflip:
        stack = tf.cond(u[0] < 0.5, lambda: tf.reverse(stack, [1]), lambda: stack)
    if cfg.vflip:
        stack = tf.cond(u[1] < 0.5, lambda: tf.reverse(stack, [0]), lambda: stack)
    if cfg.rot90:
        if size[0] == size[1]:
            k = tf.random.stateless_uniform([], keys[3], 0, 4, tf.int32)
        else:  # a quarter turn would change a non-square shape
            k = 2 * tf.random.stateless_uniform([], keys[3], 0, 2, tf.int32)
        stack = tf.image.rot90(stack, k)
    c = image.shape[-1]
    image, weight, maskf = stack[..., :c], stack[..., c : c + 1], stack[..., c + 1 :]
    mask = tf.cast(tf.round(maskf), tf.int32)
    if cfg.rotate > 0:
        limit = cfg.rotate * math.pi / 180.0
        angle = tf.random.stateless_uniform([], keys[6], -limit, limit)
        fields = rotate(tf.concat([image, weight], axis=-1), angle, "BILINEAR")
        image, weight = fields[..., :c], fields[..., c:]
        mask = rotate(mask, angle, "NEAREST")
    if cfg.elastic > 0:
        hw = tf.shape(image)[:2]
        field = elastic.displacement_field(keys[7], hw[0], hw[1], cfg.elastic, cfg.elastic_grid)
        fields = elastic.warp(tf.concat([image, weight], axis=-1), field, "BILINEAR")
        image, weight = fields[..., :c], fields[..., c:]
        mask = elastic.warp(mask, field, "NEAREST")
    if cfg.gamma > 0:  # one exponent for every channel, within the image's own range
        g = tf.math.log(1.0 + cfg.gamma)
        e = tf.exp(tf.random.stateless_uniform([], _fold(key, 1), -g, g))
        lo, hi = tf.reduce_min(image), tf.reduce_max(image)
        span = tf.maximum(hi - lo, 1e-6)
        image = lo + span * tf.pow(tf.clip_by_value((image - lo) / span, 0.0, 1.0), e)
    if cfg.brightness > 0:  # one shift for every channel
        image = image + tf.random.stateless_uniform([], keys[4], -cfg.brightness, cfg.brightness)
    if cfg.contrast > 0:
        f = tf.random.stateless_uniform([], keys[5], 1.0 - cfg.contrast, 1.0 + cfg.contrast)
        # RGB: around the image's mean (as torchvision). Other channel counts: each channel
        # around its own mean, since bands (or a lone gray channel) have levels of their own.
        axes = None if c == 3 else [0, 1]
        mean = tf.reduce_mean(image, axis=axes, keepdims=axes is not None)
        image = (image - mean) * f + mean
    if cfg.noise > 0:  # per-pixel Gaussian noise, its strength drawn per sample
        std = tf.random.stateless_uniform([], _fold(key, 2), 0.0, cfg.noise)
        image = image + std * tf.random.stateless_normal(tf.shape(image), _fold(key, 3))
    image = tf.clip_by_value(image, 0.0, 1.0)
    return _finish(image, mask, weight, size)


def _fold(key: tf.Tensor, n: int) -> tf.Tensor:
    # Keys for options added after the first eight: folded in, so the streams of the earlier
    # options (and runs seeded before) stay as they were.
    return tf.random.experimental.stateless_fold_in(key, n)


def sample_key(seed, epoch, index) -> tf.Tensor:
    """The stateless seed of sample `index` in epoch `epoch`."""
    key = tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)])
    key = tf.random.experimental.stateless_fold_in(key, _AUG_SALT)
    return tf.random.experimental.stateless_fold_in(key, tf.cast(index, tf.int64))


def _options() -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = True
    # No autotuning thread: an iterator's destructor joins it, and it sleeps up to 60 s
    # between optimizations, which held train.py's exit 38-54 s after its last line in ~1 run
    # of 4 (py-spy: the main thread in RootDataset::Iterator's destructor, waiting on it).
    # AUTOTUNE map parallelism then starts at the thread-pool size and the prefetch buffer
    # still grows by itself (its own legacy tuner): enough for these small pipelines.
    options.autotune.enabled = False
    return options


def _calls(num_parallel_calls: int) -> int:
    return tf.data.AUTOTUNE if num_parallel_calls == -1 else int(num_parallel_calls)


def train_stream(
    store: SampleStore,
    *,
    batch_size: int,
    steps_per_epoch: int,
    seed: int,
    start_step: int,
    size: tuple[int, int],
    augment_cfg: AugmentConfig,
    num_parallel_calls: int = -1,
    draws: int = 1,
    mask_interpolation: str = "nearest",
) -> tf.data.Dataset:
    """The infinite training stream of batches, starting at batch `start_step`.

    `draws` > 1 draws every image that many times per pass (crop mode with fewer images than
    a batch): draw `v` is image `v % store.size` with its own crop and augmentation, so one
    draw per image (the default) is the stream of `store.size` samples as before.
    """
    if start_step < 0:
        raise ValueError(f"Invalid start_step={start_step}; expected >= 0")
    if draws < 1:
        raise ValueError(f"Invalid draws={draws}; expected >= 1")
    per_epoch = steps_per_epoch * batch_size
    first_epoch = start_step // steps_per_epoch
    first_offset = (start_step % steps_per_epoch) * batch_size
    n = store.size * draws
    images = tf.constant(store.size, tf.int64)

    def epoch_items(epoch):
        order = epoch_permutation(seed, epoch, n)[:per_epoch]
        start = tf.where(epoch == first_epoch, tf.constant(first_offset, tf.int64), 0)
        order = tf.cast(order[start:], tf.int64)
        epochs = tf.fill(tf.shape(order), epoch)
        return tf.data.Dataset.from_tensor_slices((epochs, order))

    def load(epoch, draw):
        image, mask, weight = store.load(draw % images)
        key = sample_key(seed, epoch, draw)
        return augment(image, mask, weight, key, size, augment_cfg, mask_interpolation)

    ds = tf.data.Dataset.counter(start=first_epoch, dtype=tf.int64).flat_map(epoch_items)
    ds = ds.map(load, num_parallel_calls=_calls(num_parallel_calls), deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=True)
    ds = ds.apply(tf.data.experimental.assert_cardinality(tf.data.INFINITE_CARDINALITY))
    return ds.prefetch(tf.data.AUTOTUNE).with_options(_options())


def eval_stream(
    store: SampleStore,
    *,
    batch_size: int,
    size: tuple[int, int],
    num_parallel_calls: int = -1,
    cache: bool = True,
    mask_interpolation: str = "nearest",
) -> tf.data.Dataset:
    """A finite, ordered, unaugmented dataset of batches (last batch may be smaller): every
    image whole, or covered by `size` windows where it is larger (`eval_windows`)."""

    def load(row):
        image, mask, weight = store.load(row[0])
        return window_view(image, mask, weight, row[1], row[2], size, mask_interpolation)

    ds = tf.data.Dataset.from_tensor_slices(eval_windows(store.hw, size))
    ds = ds.map(load, num_parallel_calls=_calls(num_parallel_calls), deterministic=True)
    if cache:
        ds = ds.cache()
    ds = ds.batch(batch_size, drop_remainder=False)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(_options())
