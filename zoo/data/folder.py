"""The folder dataset: `images/` and `masks/` with matching file stems.

Layouts (see docs/data.md):

    root/images/*.png|jpg|npy  root/masks/*.png|npy        split by `val_ratio` with `split_seed`
    root/train/{images,masks}/ root/val/{images,masks}/    split given by the folders

Multilabel (`data.mode=multilabel`) masks are either one binary mask per label,
`masks/<label>/<stem>.png`, or one `(H, W, K)` 0/1 `masks/<stem>.npy` per image (`multilabel`).

Every file is read once, up front, in a thread pool; every problem raises one `ValueError` or
`FileNotFoundError` naming the file before any training starts.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from zoo.data import multilabel
from zoo.data.colors import read_class_mask
from zoo.data.config import FolderDataConfig
from zoo.data.io import (
    IMAGE_SUFFIXES,
    JPEG_SUFFIXES,
    MASK_SUFFIXES,
    UnreadableFileError,
    read_image_raw,
)
from zoo.data.sizing import auto_image_size
from zoo.errors import DataError, MissingFileError

log = logging.getLogger(__name__)

Split = tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray] | None]
Sizes = list[tuple[int, int]]


def _files(folder: Path, suffixes: tuple[str, ...], what: str, strip: str = "") -> dict[str, Path]:
    """{stem: path} of the files with `suffixes`; `strip` is cut from the end of each stem
    that has it (`data.mask_suffix`: `a_mask.png` is the mask of `a`)."""
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not p.is_file() or p.suffix.lower() not in suffixes:
            continue
        stem = p.stem[: -len(strip)] if strip and p.stem.endswith(strip) else p.stem
        if stem in out:
            raise DataError(f"Two {what} files share the stem '{stem}': '{out[stem]}' and '{p}'")
        out[stem] = p
    return out


def _suffix_hint(image_stem: str, masks: dict[str, Path]) -> str:
    """A `data.mask_suffix` that would pair the image with a mask named like it, if any."""
    for stem in sorted(masks):
        rest = stem[len(image_stem) :]
        if stem.startswith(image_stem) and rest and not rest[0].isalnum():
            return f"; masks named like '{masks[stem].name}': set data.mask_suffix={rest}"
    return ""


def find_pairs(
    folder: Path, labels: Sequence[str] | None = None, mask_suffix: str = ""
) -> list[tuple[Path, Any]]:
    """(image, mask) paths of `folder/images` and `folder/masks`, matched by file stem.

    With `labels` (multilabel data) the mask of an image is a tuple of one path per label
    (`masks/<label>/<stem>.png`), or one `.npy` path when `masks/` has no label subfolders.
    `mask_suffix` ends every mask's stem: `masks/<stem><mask_suffix>.png`.

    Raises:
        FileNotFoundError: a missing folder.
        ValueError: an image without a mask, a mask without an image, or no images at all.
    """
    images_dir, masks_dir = folder / "images", folder / "masks"
    for d in (images_dir, masks_dir):
        if not d.is_dir():
            raise MissingFileError(
                f"Missing folder '{d}': expected '{folder}' to hold images/ and masks/ with "
                "matching file stems (or train/ and val/ subfolders, each with both)"
            )
    images = _files(images_dir, IMAGE_SUFFIXES, "image")
    files = functools.partial(_files, strip=mask_suffix)
    if labels is not None and multilabel.label_dirs(masks_dir):
        return multilabel.label_pairs(images, masks_dir, labels, files)
    masks = files(masks_dir, MASK_SUFFIXES, "mask")
    for stem, p in images.items():
        if stem not in masks:
            hint = "" if mask_suffix else _suffix_hint(stem, masks)
            raise DataError(
                f"Image '{p}' has no mask: expected '{masks_dir / stem}{mask_suffix}.png' "
                f"(or .npy){hint}"
            )
    for stem, p in masks.items():
        if stem not in images:
            raise DataError(
                f"Mask '{p}' has no image: expected '{images_dir / stem}.png/.jpg/.npy'"
                + (
                    f" (data.mask_suffix={mask_suffix} is cut from mask names)"
                    if mask_suffix
                    else ""
                )
            )
    if not images:
        raise DataError(
            f"No images found in '{images_dir}' (suffixes: {', '.join(IMAGE_SUFFIXES)})"
        )
    return [(images[s], masks[s]) for s in sorted(images)]


def map_mask(
    mask: np.ndarray, path: Path, c: FolderDataConfig
) -> tuple[np.ndarray, np.ndarray | None]:
    """Check a raw mask's values and convert them: (class ids, instance ids or None).

    Binary (num_classes 1) class masks may be stored as 0/1 or 0/255; 0/255 masks are read as 0/1
    (unless ignore_index is 255, in which case 255 means "ignored"). Instance masks are binarized
    (0 -> 0, any other id -> 1) and their ids feed the U-Net border weight map.
    """
    ignore = c.ignore_index
    if Path(path).suffix.lower() in JPEG_SUFFIXES and (
        c.num_classes != 1 or c.mask_type != "class"
    ):
        raise DataError(
            f"Mask '{path}' is a JPEG: its compression changes mask values, so JPEG masks can "
            "only be binary (num_classes=1, mask_type=class); save class or instance ids as PNG"
        )
    values = np.unique(mask)
    if c.mask_type == "instance":
        if values.min() < 0:
            raise DataError(f"Mask '{path}' has negative instance id {values.min()}")
        ignored = mask == ignore if ignore is not None else np.zeros(mask.shape, bool)
        instances = np.where(ignored, 0, mask).astype(np.int32)
        classes = np.where(ignored, ignore if ignore is not None else 0, instances > 0)
        return classes.astype(np.int32), instances
    k = max(c.num_classes, 2)
    if c.num_classes == 1 and ignore != 255 and set(values.tolist()) <= {0, 255}:
        mask = (mask == 255).astype(np.int32)
        values = np.unique(mask)
    bad = values[
        ((values < 0) | (values >= k)) & (values != (ignore if ignore is not None else -1))
    ]
    if len(bad):
        allowed = "0/1 or 0/255" if c.num_classes == 1 else f"0..{k - 1}"
        if ignore is not None:
            allowed += f", or ignore_index={ignore}"
        hint = "; set data.ignore_index=255 if 255 marks ignored pixels" if 255 in bad else ""
        ids = [int(v) for v in bad if 0 < v < 255]
        if ids and not hint:  # class ids beyond num_classes: name the setting that fits them
            hint = f"; set data.num_classes={max(ids) + 1} (or more) if it holds class ids"
        raise DataError(
            f"Mask '{path}' has value {int(bad[0])} out of range for num_classes={c.num_classes} "
            f"(allowed: {allowed}){hint}"
        )
    return mask.astype(np.int32), None


def _resize(arr: np.ndarray, size: tuple[int, int], nearest: bool) -> np.ndarray:
    """PIL resize of (H, W) or (H, W, C) uint8/float/int arrays to size (height, width)."""
    h, w = size
    if arr.shape[:2] == (h, w):
        return arr
    method = Image.NEAREST if nearest else Image.BILINEAR
    if arr.ndim == 2:
        mode_arr = arr.astype(np.int32) if nearest else arr.astype(np.float32)
        return np.asarray(Image.fromarray(mode_arr).resize((w, h), method)).astype(arr.dtype)
    if arr.dtype == np.uint8 and arr.shape[-1] == 3:
        return np.asarray(Image.fromarray(arr).resize((w, h), method))
    # Channel by channel (what tiled inference resamples with, `zoo.inference.scale`): Pillow
    # has no mode for 2 or 5+ channels, and resizes RGBA with premultiplied alpha, which
    # would mix a fourth band (near-infrared) into the others.
    chans = [
        np.asarray(Image.fromarray(np.ascontiguousarray(arr[..., i])).resize((w, h), method))
        for i in range(arr.shape[-1])
    ]
    return np.stack(chans, -1).astype(arr.dtype)


def resampled_size(shape: Sequence[int], c: FolderDataConfig) -> tuple[int, int]:
    """(height, width) of a stored image after `data.resample` (crop mode), rounded as
    prediction rounds (`zoo.inference.scale.scaled_size`), so both see the same pixels."""
    if c.resample == 1:
        return int(shape[0]), int(shape[1])
    from zoo.inference.scale import scaled_size

    return scaled_size(shape[:2], (c.resample, c.resample))


def _target(shape: tuple[int, int], c: FolderDataConfig) -> tuple[int, int]:
    size = (c.image_size[0], c.image_size[1])
    if c.resize == "resize":
        return size
    # Crop mode keeps the (resampled) resolution; only images smaller than a crop are upscaled.
    shape = resampled_size(shape, c)
    f = max(size[0] / shape[0], size[1] / shape[1], 1.0)
    return (max(int(np.ceil(shape[0] * f)), size[0]), max(int(np.ceil(shape[1] * f)), size[1]))


def read_pair(pair: tuple[Path, Any], c: FolderDataConfig):
    """(image, class mask (multilabel: (H, W, K) labels), instances or None) at the stored
    size, or the read error (`skip_corrupt`). The fingerprint reads with it too."""
    image_path, mask_path = pair
    try:
        image = read_image_raw(image_path, c.channels)
        if c.mode == "multilabel":
            raw = multilabel.read_labels(mask_path, c)
            mask_path = raw.source  # the file the size is checked against
        else:
            raw = read_class_mask(mask_path, c)
    except UnreadableFileError as e:
        if c.skip_corrupt:
            return e
        raise
    if image.shape[:2] != raw.shape[:2]:
        raise DataError(
            f"Image '{image_path}' is {image.shape[0]}x{image.shape[1]} but its mask '{mask_path}' "
            f"is {raw.shape[0]}x{raw.shape[1]} (HxW); they must match"
        )
    if c.mode == "multilabel":
        return image, raw.labels, None
    mask, instances = map_mask(raw, mask_path, c)
    return image, mask, instances


def _fit(sample, c: FolderDataConfig):
    """Resize (resize mode) or upscale-if-smaller (crop mode) one sample to `c.image_size`."""
    image, mask, instances = sample
    target = _target(image.shape[:2], c)
    image = _resize(image, target, nearest=False)
    if c.mask_interpolation == "linear" and mask.shape[:2] != target:
        from zoo.data.resample import resize_labels_np  # imports TensorFlow: not at module level

        mask = resize_labels_np(mask, target)
    else:
        mask = _resize(mask, target, nearest=True)
    if instances is not None:
        instances = _resize(instances, target, nearest=True)
    return image, mask, instances


def _read_raw(pairs: list[tuple[Path, Path]], c: FolderDataConfig) -> list:
    with ThreadPoolExecutor(max(1, c.num_workers)) as pool:
        return list(pool.map(lambda p: read_pair(p, c), pairs))


def _split(pairs: list[tuple[Path, Path]], results: list, c: FolderDataConfig,
           skipped: list[str]) -> tuple[Split, Sizes]:  # fmt: skip
    """The split's samples, fitted to `c.image_size`, and the native (height, width) of each
    image kept (before resizing: the model's input scale is computed from them)."""
    images, masks, instances, sizes = [], [], [], []
    for pair, r in zip(pairs, results):
        if isinstance(r, Exception):
            skipped.append(str(pair[0]))
            log.warning("Skipping unreadable sample: %s", r)
            continue
        sizes.append((int(r[0].shape[0]), int(r[0].shape[1])))
        image, mask, inst = _fit(r, c)
        images.append(image)
        masks.append(mask)
        instances.append(inst)
    if c.mask_type != "instance":
        return (images, masks, None), sizes
    return (images, masks, instances), sizes


def split_pairs(
    c: FolderDataConfig,
) -> tuple[list[tuple[Path, Any]], list[tuple[Path, Any]]]:
    """(train, val) lists of (image, mask) paths: the split `load` uses (and full-resolution
    evaluation, which reads the validation files at native size). Multilabel data: a mask is
    a tuple of per-label paths or one `.npy` path (`find_pairs`).

    Raises:
        MissingFileError: missing root, images/ or masks/ (or val/ next to train/).
        DataError: unmatched files or no images.
    """
    root = Path(c.root).expanduser()
    if not root.is_dir():
        raise MissingFileError(f"data.root not found: '{root}' (data=folder data.root=/path)")
    labels = multilabel.resolve(c) if c.mode == "multilabel" else None
    if (root / "train").is_dir():
        if not (root / "val").is_dir():
            raise MissingFileError(f"Found '{root / 'train'}' but no '{root / 'val'}' folder")
        suffix = c.mask_suffix
        return find_pairs(root / "train", labels, suffix), find_pairs(root / "val", labels, suffix)
    pairs = find_pairs(root, labels, c.mask_suffix)
    order = np.random.default_rng(c.split_seed).permutation(len(pairs))
    n_val = int(round(c.val_ratio * len(pairs)))
    if c.val_ratio > 0 and len(pairs) > 1:
        n_val = min(max(n_val, 1), len(pairs) - 1)
    val_pairs = [pairs[i] for i in sorted(order[:n_val])]
    train_pairs = [pairs[i] for i in sorted(order[n_val:])]
    return train_pairs, val_pairs


def load(
    c: FolderDataConfig, divisor: int = 32
) -> tuple[Split, Split | None, tuple[str, ...], tuple[str, ...], Sizes]:
    """Read, check and split a folder dataset.

    Args:
        c: the folder data config.
        divisor: the model's size divisor, for `image_size: null`: `c.image_size` is then set
            from the images (`auto_image_size`).

    Returns:
        (train split, val split or None, class names, skipped file paths, native sizes of the
        training images); a split is (images, masks, instances or None); a native size is the
        (height, width) of an image as stored, before any resizing.

    Raises:
        FileNotFoundError: missing root, images/ or masks/.
        ValueError: any problem with a file, naming the file.
    """
    root = Path(c.root).expanduser()
    train_pairs, val_pairs = split_pairs(c)
    skipped: list[str] = []
    raw_train = _read_raw(train_pairs, c)
    raw_val = _read_raw(val_pairs, c) if val_pairs else []
    if c.image_size is None:
        sizes = [
            resampled_size(r[0].shape[:2], c)
            for r in raw_train + raw_val
            if not isinstance(r, Exception)
        ]
        if sizes:
            size, why = auto_image_size(sizes, divisor)
            log.info("data.image_size=%s: %s (data.image_size: null)", size, why)
            c.image_size = size  # the caller's copy (build_datasets) reads it back
    train, native_sizes = _split(train_pairs, raw_train, c, skipped)
    val = _split(val_pairs, raw_val, c, skipped)[0] if val_pairs else None
    total = len(train_pairs) + len(val_pairs)
    if skipped:
        ratio = len(skipped) / total
        log.warning(
            "Skipped %d unreadable sample(s) of %d (skip_corrupt=true)", len(skipped), total
        )
        if ratio > c.max_corrupt_ratio:
            raise DataError(
                f"{len(skipped)} of {total} samples are unreadable ({ratio:.1%} > "
                f"data.max_corrupt_ratio={c.max_corrupt_ratio}); first: '{skipped[0]}'"
            )
    if not train[0]:
        raise DataError(f"No readable training samples under '{root}'")
    if c.mode == "multilabel":
        names: tuple[str, ...] = tuple(c.class_names or ())
    elif c.num_classes == 1:
        names = ("background", "foreground")
    else:
        names = ("background", *(f"class_{i}" for i in range(1, c.num_classes)))
    return train, val, names, tuple(skipped), native_sizes
