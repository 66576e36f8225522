"""Typed schemas of the data configs (`conf/data/<name>.yaml`).

The training app stores each schema in Hydra's ConfigStore as `<name>_schema`, so a typo in a key
or a wrong type fails at composition time. `parse_data_config` applies the same schemas to plain
mappings (tests, notebooks) and adds the checks a type system cannot express.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from zoo.errors import ConfigError
from zoo.outputs import to_plain

WEIGHT_MAPS = ("none", "class_balance", "unet_border")
MASK_INTERPOLATIONS = ("linear", "nearest")  # zoo.data.resample
RESIZE_MODES = ("resize", "crop")
MASK_TYPES = ("class", "instance")
# "auto": binary for num_classes 1, multiclass otherwise (what a config without `mode` means).
DATA_MODES = ("auto", "binary", "multiclass", "multilabel")


@dataclass
class AugmentConfig:
    """Training-time augmentation; validation data is never augmented.

    `scale` is the range of the crop window's area relative to the base window (the whole stored
    image when `resize: resize`, an `image_size` window when `resize: crop`); the window is
    resized back to `image_size`. `rotate` is the largest rotation in degrees (a uniform angle in
    [-rotate, rotate], the borders filled by reflection). `elastic` is the standard deviation in
    pixels of a random displacement at each of `elastic_grid` x `elastic_grid` control points,
    interpolated bicubically to every pixel (the U-Net paper's elastic deformation; 0 = off).
    `gamma` sets the range of a gamma (power-law) change of the intensities within each image's
    own range, exponent in [1 / (1 + gamma), 1 + gamma] (log-uniform). `brightness` is the
    largest additive shift, `contrast` the largest relative change of the contrast factor,
    `noise` the largest standard deviation of additive Gaussian pixel noise (drawn per sample
    in [0, noise]). Intensity options are in units of the [0, 1] image range; 0 disables any
    of them.
    """

    enabled: bool = True
    hflip: bool = True
    vflip: bool = True
    rot90: bool = True
    scale: list[float] = field(default_factory=lambda: [0.6, 1.0])
    rotate: float = 0.0
    elastic: float = 0.0
    elastic_grid: int = 3
    gamma: float = 0.0
    brightness: float = 0.1
    contrast: float = 0.1
    noise: float = 0.0


@dataclass
class DataConfig:
    """Keys shared by every dataset."""

    name: str = "???"
    # auto | binary | multiclass | multilabel (overlapping labels, one 0/1 mask per label:
    # data=folder only; docs/data.md "Multilabel masks").
    mode: str = "auto"
    num_classes: int = 1
    ignore_index: int | None = None
    # Multiclass: the background's class id; val_dice / val_iou (and so the monitored metric)
    # then average the other classes. null: every class counts.
    background_class: int | None = None
    image_size: list[int] = field(default_factory=lambda: [96, 96])
    # Input channels of the images and the model: 3 (gray repeated, alpha dropped), 1 (gray),
    # or N (multi-band); see zoo.data.io.to_channels. Generated and pets data are RGB.
    channels: int = 3
    batch_size: int = 16  # per replica; the app passes the global batch size
    weight_map: str = "none"
    # How masks are resampled wherever images are resized (crops, resize mode, data.resample):
    # nearest | linear (outlines stay where the resized image shows them); zoo.data.resample.
    mask_interpolation: str = "nearest"
    w0: float = 10.0
    sigma: float = 5.0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    cache: bool = True
    num_parallel_calls: int = -1  # -1: tf.data.AUTOTUNE


@dataclass
class ShapesDataConfig(DataConfig):
    """Procedurally generated shapes (see `zoo.data.shapes`). num_classes: 1 or 5."""

    name: str = "shapes"
    num_classes: int = 1
    weight_map: str = "unet_border"
    train_size: int = 512
    val_size: int = 64
    generator_seed: int = 0
    min_objects: int = 3
    max_objects: int = 7
    noise: float = 0.04


@dataclass
class FolderDataConfig(DataConfig):
    """Images and masks on disk (see docs/data.md for the layout).

    `image_size: None` (the default) takes the size from the images: native-resolution crops of
    the smallest image (outliers far smaller than the rest aside), at most `AUTO_SIZE_LIMIT` px
    a side, rounded down to the model's divisor (`zoo.data.sizing.auto_image_size`); tiles are
    never upsampled, only such outliers.
    """

    name: str = "folder"
    image_size: list[int] | None = None
    # Multilabel: the labels (mask subfolders, or the channels of .npy masks), in order;
    # null: the sorted subfolder names of masks/ (or label_<k> for .npy masks).
    class_names: list[str] | None = None
    class_colors: list[list[int]] | None = None  # RGB masks: one [r, g, b] per class id
    batch_size: int = 8
    root: str = "???"
    val_ratio: float = 0.2
    split_seed: int = 0
    mask_type: str = "class"
    # Ends every mask's file stem: "_segmentation" pairs images/a.jpg with masks/a_segmentation.png.
    mask_suffix: str = ""
    resize: str = "crop"
    # Training pixels per stored pixel (crop mode): images and masks are resampled by this
    # factor as they are read (0.5 halves each side, aspect kept), crops are cut from the
    # result, and the model's input_scale records it, so prediction resamples native images
    # the same way. For large images whose objects need more context than a crop holds.
    resample: float = 1.0
    skip_corrupt: bool = False
    max_corrupt_ratio: float = 0.05
    num_workers: int = 8


@dataclass
class PetsDataConfig(DataConfig):
    """Oxford-IIIT Pet through tensorflow-datasets (optional extra `tfds`): pet vs background."""

    name: str = "pets"
    num_classes: int = 1
    ignore_index: int | None = 255  # the trimap's "border" pixels
    image_size: list[int] = field(default_factory=lambda: [128, 128])
    data_dir: str | None = None
    train_split: str = "train"
    val_split: str = "test[:10%]"
    border_as_ignore: bool = True


DATA_SCHEMAS: dict[str, type[DataConfig]] = {
    "shapes": ShapesDataConfig,
    "folder": FolderDataConfig,
    "pets": PetsDataConfig,
}


def _build(schema: type, values: dict[str, Any], where: str) -> Any:
    names = {f.name for f in dataclasses.fields(schema)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(
            f"Unknown key {where}.{unknown[0]}; valid keys: {', '.join(sorted(names))}"
        )
    return schema(**values)


def parse_data_config(cfg: Any) -> DataConfig:
    """Turn a DictConfig / mapping / dataclass into the typed schema and check its values.

    Args:
        cfg: the `data` node of the training config (or any mapping with the same keys).

    Returns:
        An instance of the schema named by `cfg["name"]` (e.g. `ShapesDataConfig`).

    Example:
        >>> parse_data_config({"name": "shapes", "image_size": [64, 64]}).train_size
        512
    """
    values = to_plain(cfg)
    if not isinstance(values, dict):
        raise TypeError(f"data config must be a mapping or dataclass, got {type(cfg).__name__}")
    name = values.get("name")
    if name not in DATA_SCHEMAS:
        raise ConfigError(f"Invalid data.name={name!r}; choose one of: {', '.join(DATA_SCHEMAS)}")
    values = dict(values)
    augment = values.pop("augment", None) or {}
    out = _build(DATA_SCHEMAS[name], values, "data")
    out.augment = _build(AugmentConfig, dict(augment), "data.augment")
    _check(out)
    return out


def data_mode(c: DataConfig) -> str:
    """The label mode of checked data: "binary", "multiclass" or "multilabel"."""
    if c.mode != "auto":
        return c.mode
    return "binary" if int(c.num_classes) == 1 else "multiclass"


def _check_mode(c: DataConfig, bad: Any) -> None:
    if c.mode not in DATA_MODES:
        raise bad("mode", c.mode, f"one of {', '.join(DATA_MODES)}")
    if c.mode == "binary" and c.num_classes != 1:
        raise bad("mode", c.mode, f"'multiclass' or 'multilabel' for num_classes={c.num_classes}")
    if c.mode == "multiclass" and c.num_classes < 2:
        raise bad("mode", c.mode, "'binary' for num_classes=1 (multiclass needs >= 2 classes)")
    bg = c.background_class
    if bg is not None and (
        data_mode(c) != "multiclass"
        or isinstance(bg, bool)
        or not isinstance(bg, int)
        or not 0 <= bg < c.num_classes
    ):
        valid = (
            f"null or a class id 0..{c.num_classes - 1}"
            if data_mode(c) == "multiclass"
            else "null unless the data is multiclass (binary Dice is the foreground's already)"
        )
        raise bad("background_class", bg, valid)
    names = getattr(c, "class_names", None)
    if names is not None:
        if c.mode != "multilabel":
            raise bad("class_names", names, "null unless data.mode=multilabel")
        if (
            not names
            or len(set(names)) != len(names)
            or not all(isinstance(n, str) and n for n in names)
        ):
            raise bad("class_names", names, "a list of distinct, non-empty label names")
    if c.mode != "multilabel":
        return
    if isinstance(c, ShapesDataConfig):
        if c.num_classes not in (1, 5):  # 1: from the data
            raise bad("num_classes", c.num_classes, "5 (or 1) for multilabel shapes")
        c.num_classes = 5  # "shape" + the 4 kinds (zoo.data.shapes.LABEL_NAMES)
    elif not isinstance(c, FolderDataConfig):
        raise bad("mode", c.mode, f"'auto', 'binary' or 'multiclass' for data={c.name} "
                  "(multilabel masks: data=folder or data=shapes)")  # fmt: skip
    if getattr(c, "mask_type", "class") != "class":
        raise bad("mask_type", c.mask_type, "'class' with data.mode=multilabel")
    if c.weight_map == "class_balance":
        raise bad("weight_map", c.weight_map, "none or unet_border with data.mode=multilabel "
                  "(weigh a rare label with loss_options.wbce.pos_weight)")  # fmt: skip
    if c.ignore_index is not None and c.ignore_index in (0, 1):
        raise bad("ignore_index", c.ignore_index, "null or a value other than 0 and 1")


def _check_colors(c: FolderDataConfig, bad: Any) -> None:
    colors, k = c.class_colors, max(int(c.num_classes), 2)
    shown = colors if len(str(colors)) <= 80 else f"<{len(colors)} colors>"
    if c.mode == "multilabel" or c.mask_type != "class":
        raise bad("class_colors", shown, "null with data.mode=multilabel or mask_type=instance")
    ok = all(
        isinstance(v, list | tuple)
        and len(v) == 3
        and all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= 255 for x in v)
        for v in colors
    )
    if not ok or len({tuple(v) for v in colors}) != len(colors):
        raise bad("class_colors", shown, "a list of distinct [r, g, b] colors, each 0..255")
    if len(colors) != k:
        fix = f"data.num_classes={len(colors)}" if len(colors) > 2 else "data.num_classes=1"
        raise bad(
            "class_colors", shown, f"{k} colors (one per class of num_classes={c.num_classes}); "
            f"for {len(colors)} classes set {fix}",
        )  # fmt: skip
    c.class_colors = [[int(x) for x in v] for v in colors]


def _check(c: DataConfig) -> None:
    def bad(key: str, value: Any, expected: str) -> ConfigError:
        return ConfigError(f"Invalid data.{key}={value!r}; expected {expected}")

    if int(c.num_classes) < 1:
        raise bad("num_classes", c.num_classes, "an integer >= 1")
    _check_mode(c, bad)
    ignore = c.ignore_index
    if c.mode != "multilabel" and ignore is not None and 0 <= ignore < c.num_classes:
        raise bad("ignore_index", c.ignore_index, f"null or a value outside 0..{c.num_classes - 1}")
    if c.image_size is None and not isinstance(c, FolderDataConfig):
        raise bad("image_size", None, "[height, width], each >= 8")
    if c.image_size is not None:
        size = list(c.image_size)
        if len(size) != 2 or any(int(s) < 8 for s in size):
            raise bad("image_size", size, "[height, width], each >= 8 (or null: from the images)")
        c.image_size = [int(s) for s in size]
    if int(c.batch_size) < 1:
        raise bad("batch_size", c.batch_size, "an integer >= 1")
    if isinstance(c.channels, bool) or not isinstance(c.channels, int) or c.channels < 1:
        raise bad("channels", c.channels, "an integer >= 1 (1: gray, 3: RGB, N: N bands)")
    if c.channels != 3 and not isinstance(c, FolderDataConfig):
        raise bad(
            "channels", c.channels, f"3: data={c.name} has RGB images (other counts: data=folder)"
        )
    if c.mask_interpolation not in MASK_INTERPOLATIONS:
        raise bad(
            "mask_interpolation", c.mask_interpolation, f"one of {', '.join(MASK_INTERPOLATIONS)}"
        )
    if c.weight_map not in WEIGHT_MAPS:
        raise bad("weight_map", c.weight_map, f"one of {', '.join(WEIGHT_MAPS)}")
    if c.sigma <= 0:
        raise bad("sigma", c.sigma, "a positive number of pixels")
    if c.w0 < 0:
        raise bad("w0", c.w0, "a number >= 0")
    scale = list(c.augment.scale)
    if len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1:
        raise bad("augment.scale", scale, "[min, max] with 0 < min <= max <= 1")
    if not 0 <= c.augment.rotate <= 180:
        raise bad("augment.rotate", c.augment.rotate, "an angle in degrees in [0, 180]")
    if not 0 <= c.augment.elastic <= 64:
        raise bad("augment.elastic", c.augment.elastic, "a displacement in pixels in [0, 64]")
    grid = c.augment.elastic_grid
    if isinstance(grid, bool) or not isinstance(grid, int) or grid < 2:
        raise bad("augment.elastic_grid", grid, "an integer >= 2 (control points per side)")
    if not 0 <= c.augment.gamma <= 4:
        raise bad("augment.gamma", c.augment.gamma, "a number in [0, 4] (exponent 1/(1+g)..1+g)")
    if not 0 <= c.augment.noise <= 1:
        raise bad("augment.noise", c.augment.noise, "a standard deviation in [0, 1]")
    if not 0 <= c.augment.brightness <= 1:
        raise bad("augment.brightness", c.augment.brightness, "a number in [0, 1]")
    if not 0 <= c.augment.contrast < 1:
        raise bad("augment.contrast", c.augment.contrast, "a number in [0, 1)")
    if c.num_parallel_calls == 0 or c.num_parallel_calls < -1:
        raise bad("num_parallel_calls", c.num_parallel_calls, "-1 (autotune) or >= 1")
    if isinstance(c, ShapesDataConfig):
        if c.num_classes not in (1, 5):
            raise bad("num_classes", c.num_classes, "1 (binary) or 5 (background + 4 shape kinds)")
        if c.train_size < 1 or c.val_size < 0:
            raise bad("train_size", (c.train_size, c.val_size), "train_size >= 1, val_size >= 0")
        if not 1 <= c.min_objects <= c.max_objects:
            raise bad("min_objects", (c.min_objects, c.max_objects), "1 <= min <= max")
    if isinstance(c, FolderDataConfig):
        if c.root in ("???", "", None):
            raise ConfigError("Missing data.root: pass data.root=/path/to/dataset")
        if not 0 <= c.val_ratio < 1:
            raise bad("val_ratio", c.val_ratio, "a number in [0, 1)")
        if c.mask_type not in MASK_TYPES:
            raise bad("mask_type", c.mask_type, f"one of {', '.join(MASK_TYPES)}")
        if c.mask_type == "instance" and c.num_classes != 1:
            expected = "'class' when num_classes > 1 (instances are binarized)"
            raise bad("mask_type", c.mask_type, expected)
        if c.resize not in RESIZE_MODES:
            raise bad("resize", c.resize, f"one of {', '.join(RESIZE_MODES)}")
        if c.class_colors is not None:
            _check_colors(c, bad)
        r = c.resample
        if isinstance(r, bool) or not isinstance(r, int | float) or not 0 < r <= 4:
            raise bad("resample", r, "a factor in (0, 4] (training pixels per stored pixel)")
        if c.resize == "resize" and r != 1:
            raise bad("resample", r, "1 with resize=resize (every image is resized to image_size)")
        if not 0 <= c.max_corrupt_ratio <= 1:
            raise bad("max_corrupt_ratio", c.max_corrupt_ratio, "a number in [0, 1]")
