"""`build_datasets`: the one entry point of the training app into the data package."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tensorflow as tf

from zoo.data import pipeline, weights
from zoo.data.config import (
    DataConfig,
    FolderDataConfig,
    PetsDataConfig,
    ShapesDataConfig,
    data_mode,
    parse_data_config,
)
from zoo.errors import DataError

log = logging.getLogger(__name__)
# Validation windows are cached in memory up to this size (float32 image, mask and weight).
VAL_CACHE_BYTES = 1 << 30


@dataclass
class DataInfo:
    """What the rest of the app needs to know about the data.

    Attributes:
        name: the dataset config's name.
        num_classes: 1 for binary masks, else the number of classes.
        mode: "binary", "multiclass" or "multilabel" (masks (H, W, K), one 0/1 per label).
        ignore_index: mask value of ignored pixels, or None.
        steps_per_epoch: train_size // global_batch_size (full batches per epoch).
        train_size: number of training samples.
        val_size: number of validation samples (windows: in crop mode an image larger than
            `image_size` is validated as the grid of windows that covers it).
        image_size: (height, width) of every batch.
        class_names: one name per class (binary: ("background", <foreground>); multilabel:
            one per label).
        global_batch_size: batch size of `train` and `val`.
        class_weights: w_c per class used by the class-balance / U-Net weight maps.
        weight_map: the weight map kind.
        skipped: files skipped as unreadable (folder dataset with skip_corrupt).
        native_sizes: (height, width) of every training image as stored, before resizing
            (folder and pets data; generated data is made at `image_size`).
        input_scale: (sy, sx) training pixels per native pixel, the median over the training
            images (`zoo.inference.input_scale_from_sizes`); recorded in the model's metadata
            so prediction resamples native images to the scale the model learned.
        channels: image channels (`data.channels`): the model's input channels.
        class_colors: the [r, g, b] of each class in color-coded masks (`data.class_colors`),
            or () for masks of class ids.
        background_class: multiclass: the class left out of the mean Dice/IoU
            (`data.background_class`), or None.
    """

    name: str
    num_classes: int
    mode: str
    ignore_index: int | None
    steps_per_epoch: int
    train_size: int
    val_size: int
    image_size: tuple[int, int]
    class_names: tuple[str, ...]
    global_batch_size: int
    class_weights: tuple[float, ...] = ()
    weight_map: str = "none"
    skipped: tuple[str, ...] = ()
    native_sizes: tuple[tuple[int, int], ...] = ()
    input_scale: tuple[float, float] = (1.0, 1.0)
    channels: int = 3
    class_colors: tuple[tuple[int, int, int], ...] = ()
    background_class: int | None = None


@dataclass
class DataBundle:
    """The datasets built by `build_datasets`.

    Attributes:
        train: infinite stream of augmented batches (dicts of image, mask, weight).
        val: finite, ordered, unaugmented batches with the same layout.
        info: `DataInfo`.
        train_at: `train_at(step)` is the training stream from global batch `step` on (the
            same batches as `train` from that step; built without re-reading the data).
    """

    train: tf.data.Dataset
    val: tf.data.Dataset
    info: DataInfo
    _val_store: Any = field(default=None, repr=False)
    train_at: Any = field(default=None, repr=False)
    mask_interpolation: str = field(default="nearest", repr=False)  # val_images as `val`

    def val_images(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """First `n` validation samples: images f32 (n,H,W,C), masks int32 (n,H,W,1), or
        (n,H,W,K) for multilabel data."""
        h, w = self.info.image_size
        if self._val_store is None or n <= 0:
            empty = np.zeros((0, h, w, self.info.channels), np.float32)
            k = self.info.num_classes if self.info.mode == "multilabel" else 1
            return empty, np.zeros((0, h, w, k), np.int32)
        # An uncached copy: a partial read of `val` would leave its cache half-filled.
        ds = pipeline.eval_stream(
            self._val_store,
            batch_size=int(n),
            size=(h, w),
            cache=False,
            mask_interpolation=self.mask_interpolation,
        )
        batch = next(iter(ds))
        return batch["image"].numpy(), batch["mask"].numpy()


def _weight_maps(
    masks: Sequence[np.ndarray],
    instances: Sequence[np.ndarray] | None,
    c: DataConfig,
    class_weights: np.ndarray,
    workers: int = 4,
) -> list[np.ndarray]:
    multilabel = data_mode(c) == "multilabel"

    def one(i: int) -> np.ndarray:
        inst = instances[i] if instances is not None else None
        if multilabel:
            # One (H, W) map for all labels: the border term between objects of any label.
            # Ignored pixels are left out per label by the losses' ignore_index, not here.
            union = (np.asarray(masks[i]) == 1).any(axis=-1).astype(np.int32)
            return weights.weight_map(union, c.weight_map, class_weights, inst, c.w0, c.sigma)
        return weights.weight_map(
            masks[i], c.weight_map, class_weights, inst, c.w0, c.sigma, c.ignore_index
        )

    if c.weight_map != "unet_border":
        return [one(i) for i in range(len(masks))]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, range(len(masks))))


def make_samples(
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    instances: Sequence[np.ndarray] | None,
    c: DataConfig,
    class_weights: np.ndarray,
) -> pipeline.Samples:
    """Attach weight maps (computed once, before augmentation) to decoded images and masks."""
    return pipeline.Samples(images, masks, _weight_maps(masks, instances, c, class_weights))


def _shapes(c: ShapesDataConfig):
    from zoo.data import shapes

    kw = dict(
        image_size=c.image_size,
        seed=c.generator_seed,
        min_objects=c.min_objects,
        max_objects=c.max_objects,
        noise=c.noise,
        cache=c.cache,
    )
    train = shapes.generate_shapes(c.train_size, split="train", **kw)
    val = shapes.generate_shapes(c.val_size, split="val", **kw) if c.val_size else None
    multilabel = data_mode(c) == "multilabel"
    if multilabel:
        names = shapes.LABEL_NAMES
    else:
        names = ("background", "shape") if c.num_classes == 1 else shapes.CLASS_NAMES

    def split(arrays):
        if arrays is None:
            return None
        masks = arrays.labels() if multilabel else arrays.masks(c.num_classes)
        return list(arrays.images), list(masks), list(arrays.instances)

    return split(train), split(val), names, (), None


def build_datasets(
    data_cfg: Any,
    global_batch_size: int,
    seed: int = 0,
    start_step: int = 0,
    size_divisor: int = 32,
) -> DataBundle:
    """Build the training stream and validation set described by a data config.

    Every input problem (missing files, bad masks, NaN images, ...) raises here, before training.

    Args:
        data_cfg: the `data` config node (DictConfig, mapping or a schema dataclass).
        global_batch_size: batch size across all replicas.
        seed: seed of the sample order and the augmentation.
        start_step: index of the first training batch (resume); the stream equals the stream of
            `start_step=0` with its first `start_step` batches dropped.
        size_divisor: the model's size divisor; a folder config with `image_size: null` takes
            its size from the images in multiples of it (`zoo.data.sizing.auto_image_size`).

    Returns:
        `DataBundle` with `train`, `val` and `info`.

    Example:
        >>> bundle = build_datasets({"name": "shapes", "train_size": 32, "val_size": 8,
        ...                          "image_size": [64, 64]}, global_batch_size=8)
        >>> next(iter(bundle.train))["image"].shape
        TensorShape([8, 64, 64, 3])
    """
    c = parse_data_config(data_cfg)
    if int(global_batch_size) < 1:
        raise ValueError(f"Invalid global_batch_size={global_batch_size}; expected >= 1")
    if isinstance(c, ShapesDataConfig):
        train, val, names, skipped, native_sizes = _shapes(c)
    elif isinstance(c, FolderDataConfig):
        from zoo.data import folder

        train, val, names, skipped, native_sizes = folder.load(c, int(size_divisor))
    elif isinstance(c, PetsDataConfig):
        from zoo.data import tfds

        train, val, names, skipped, native_sizes = tfds.load_pets(c)
    else:  # pragma: no cover - parse_data_config only returns the schemas above
        raise ValueError(f"Invalid data.name={c.name!r}")

    mode = data_mode(c)
    if mode == "multilabel":  # class_balance is refused; the border map's w_c is 1
        class_weights = np.ones(2, np.float32)
    else:
        counts = weights.class_counts(train[1], c.num_classes)
        class_weights = weights.class_balance_weights(counts)
    train_samples = make_samples(*train, c, class_weights)
    n_train = len(train_samples)
    size = (c.image_size[0], c.image_size[1])
    train_store = pipeline.SampleStore(train_samples)
    draws = 1
    if n_train < int(global_batch_size):
        crop = isinstance(c, FolderDataConfig) and c.resize == "crop"
        windows = pipeline.distinct_windows(train_store.hw, size) if crop else n_train
        if windows < int(global_batch_size):
            replicas = max(1, int(global_batch_size) // max(1, int(c.batch_size)))
            fits = max(1, windows // replicas)
            held = f" ({windows} crops of {size[0]}x{size[1]})" if windows > n_train else ""
            raise DataError(
                f"The training set has {n_train} samples{held}, fewer than global_batch_size="
                f"{global_batch_size}; lower data.batch_size (e.g. data.batch_size={fits}), "
                "add data, or let recipe=auto plan the batch"
            )
        # A few images larger than the crop hold a batch of different crops: each pass draws
        # every image several times, each draw with its own window and augmentation.
        draws = math.ceil(int(global_batch_size) / n_train)
        log.info(
            "Training: %d image(s) hold %d crops of %dx%d; each pass draws every image %d times "
            "(a batch of %d)", n_train, windows, size[0], size[1], draws, global_batch_size,
        )  # fmt: skip
    steps = n_train * draws // int(global_batch_size)
    input_scale = (1.0, 1.0)
    if native_sizes:
        from zoo.inference.scale import input_scale_from_sizes

        folder = isinstance(c, FolderDataConfig)
        resize = c.resize if folder else "resize"
        resample = c.resample if folder else 1.0
        sy, sx = input_scale_from_sizes(native_sizes, size, resize, resample)
        input_scale = (sy, sx)

    def train_at(step: int) -> tf.data.Dataset:
        return pipeline.train_stream(
            train_store,
            batch_size=int(global_batch_size),
            steps_per_epoch=steps,
            seed=int(seed),
            start_step=int(step),
            size=size,
            augment_cfg=c.augment,
            num_parallel_calls=c.num_parallel_calls,
            draws=draws,
            mask_interpolation=c.mask_interpolation,
        )

    train_ds = train_at(int(start_step))
    if val is not None and len(val[0]):
        val_store = pipeline.SampleStore(make_samples(*val, c, class_weights))
        n_val = len(pipeline.eval_windows(val_store.hw, size))
        # The windows are float32 (image, mask, weight); many large images would not fit in
        # memory twice, and cutting windows from the in-memory store is cheap anyway.
        per_window = size[0] * size[1] * 4 * (val_store.channels + val_store.mask_channels + 1)
        val_ds = pipeline.eval_stream(
            val_store,
            batch_size=int(global_batch_size),
            size=size,
            num_parallel_calls=c.num_parallel_calls,
            cache=n_val * per_window <= VAL_CACHE_BYTES,
            mask_interpolation=c.mask_interpolation,
        )
        if n_val != val_store.size:  # crop mode: larger images are validated window by window
            log.info(
                "Validation: %d image(s) covered by %d windows of %dx%d (every pixel validated)",
                val_store.size, n_val, size[0], size[1],
            )  # fmt: skip
    else:
        n_val = 0
        val_store = None
        spec = train_ds.element_spec
        val_ds = tf.data.Dataset.from_tensor_slices(
            {k: tf.zeros([0, *v.shape[1:]], v.dtype) for k, v in spec.items()}
        ).batch(int(global_batch_size))
    info = DataInfo(
        name=c.name,
        num_classes=c.num_classes,
        mode=mode,
        ignore_index=c.ignore_index,
        steps_per_epoch=steps,
        train_size=n_train,
        val_size=n_val,
        image_size=size,
        class_names=tuple(names),
        global_batch_size=int(global_batch_size),
        class_weights=tuple(float(x) for x in class_weights),
        weight_map=c.weight_map,
        skipped=tuple(skipped),
        native_sizes=tuple(native_sizes or ()),
        input_scale=input_scale,
        channels=train_store.channels,
        class_colors=tuple(tuple(v) for v in getattr(c, "class_colors", None) or ()),
        background_class=c.background_class,
    )
    log.info(
        "Data %s: %d train / %d val samples of %dx%dx%d, %d steps per epoch, weight map %s",
        c.name,
        n_train,
        n_val,
        size[0],
        size[1],
        train_store.channels,
        steps,
        c.weight_map,
    )
    return DataBundle(train_ds, val_ds, info, val_store, train_at, c.mask_interpolation)
