"""The folder dataset: `images/` and `masks/` with matching file stems.

Layouts (see docs/data.md):

    root/images/*.png|jpg|npy  root/masks/*.png|npy        split by `val_ratio` with `split_seed`
    root/train/{images,masks}/ root/val/{images,masks}/    split given by the folders

Every file is read once, up front, in a thread pool; every problem raises one `ValueError` or
`FileNotFoundError` naming the file before any training starts.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from zoo.data.config import FolderDataConfig
from zoo.data.io import (
    IMAGE_SUFFIXES,
    MASK_SUFFIXES,
    UnreadableFileError,
    read_image_raw,
    read_mask,
)
from zoo.errors import DataError, MissingFileError

log = logging.getLogger(__name__)

Split = tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray] | None]
Sizes = list[tuple[int, int]]


def _files(folder: Path, suffixes: tuple[str, ...], what: str) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not p.is_file() or p.suffix.lower() not in suffixes:
            continue
        if p.stem in out:
            raise DataError(
                f"Two {what} files share the stem '{p.stem}': '{out[p.stem]}' and '{p}'"
            )
        out[p.stem] = p
    return out


def find_pairs(folder: Path) -> list[tuple[Path, Path]]:
    """(image, mask) paths of `folder/images` and `folder/masks`, matched by file stem.

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
    masks = _files(masks_dir, MASK_SUFFIXES, "mask")
    for stem, p in images.items():
        if stem not in masks:
            raise DataError(f"Image '{p}' has no mask: expected '{masks_dir / stem}.png' (or .npy)")
    for stem, p in masks.items():
        if stem not in images:
            raise DataError(
                f"Mask '{p}' has no image: expected '{images_dir / stem}.png/.jpg/.npy'"
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
    if arr.dtype == np.uint8:
        return np.asarray(Image.fromarray(arr).resize((w, h), method))
    chans = [np.asarray(Image.fromarray(arr[..., i]).resize((w, h), method)) for i in range(3)]
    return np.stack(chans, -1).astype(arr.dtype)


def _target(shape: tuple[int, int], c: FolderDataConfig) -> tuple[int, int]:
    size = (c.image_size[0], c.image_size[1])
    if c.resize == "resize":
        return size
    # Crop mode keeps native resolution; only images smaller than a crop are upscaled.
    f = max(size[0] / shape[0], size[1] / shape[1], 1.0)
    return (max(int(np.ceil(shape[0] * f)), size[0]), max(int(np.ceil(shape[1] * f)), size[1]))


def _read_pair(pair: tuple[Path, Path], c: FolderDataConfig):
    image_path, mask_path = pair
    try:
        image = read_image_raw(image_path)
        raw = read_mask(mask_path)
    except UnreadableFileError as e:
        if c.skip_corrupt:
            return e
        raise
    if image.shape[:2] != raw.shape:
        raise DataError(
            f"Image '{image_path}' is {image.shape[0]}x{image.shape[1]} but its mask '{mask_path}' "
            f"is {raw.shape[0]}x{raw.shape[1]} (HxW); they must match"
        )
    mask, instances = map_mask(raw, mask_path, c)
    native = (int(image.shape[0]), int(image.shape[1]))  # before resizing: the input scale
    target = _target(native, c)
    image = _resize(image, target, nearest=False)
    mask = _resize(mask, target, nearest=True)
    if instances is not None:
        instances = _resize(instances, target, nearest=True)
    return image, mask, instances, native


def _read_split(
    pairs: list[tuple[Path, Path]], c: FolderDataConfig, skipped: list[str]
) -> tuple[Split, Sizes]:
    """The split's samples and the native (height, width) of each image kept."""
    with ThreadPoolExecutor(max(1, c.num_workers)) as pool:
        results = list(pool.map(lambda p: _read_pair(p, c), pairs))
    images, masks, instances, sizes = [], [], [], []
    for pair, r in zip(pairs, results):
        if isinstance(r, Exception):
            skipped.append(str(pair[0]))
            log.warning("Skipping unreadable sample: %s", r)
            continue
        images.append(r[0])
        masks.append(r[1])
        instances.append(r[2])
        sizes.append(r[3])
    if c.mask_type != "instance":
        return (images, masks, None), sizes
    return (images, masks, instances), sizes


def split_pairs(
    c: FolderDataConfig,
) -> tuple[list[tuple[Path, Path]], list[tuple[Path, Path]]]:
    """(train, val) lists of (image, mask) paths: the split `load` uses (and full-resolution
    evaluation, which reads the validation files at native size).

    Raises:
        MissingFileError: missing root, images/ or masks/ (or val/ next to train/).
        DataError: unmatched files or no images.
    """
    root = Path(c.root).expanduser()
    if not root.is_dir():
        raise MissingFileError(f"data.root not found: '{root}' (data=folder data.root=/path)")
    if (root / "train").is_dir():
        if not (root / "val").is_dir():
            raise MissingFileError(f"Found '{root / 'train'}' but no '{root / 'val'}' folder")
        return find_pairs(root / "train"), find_pairs(root / "val")
    pairs = find_pairs(root)
    order = np.random.default_rng(c.split_seed).permutation(len(pairs))
    n_val = int(round(c.val_ratio * len(pairs)))
    if c.val_ratio > 0 and len(pairs) > 1:
        n_val = min(max(n_val, 1), len(pairs) - 1)
    val_pairs = [pairs[i] for i in sorted(order[:n_val])]
    train_pairs = [pairs[i] for i in sorted(order[n_val:])]
    return train_pairs, val_pairs


def load(
    c: FolderDataConfig,
) -> tuple[Split, Split | None, tuple[str, ...], tuple[str, ...], Sizes]:
    """Read, check and split a folder dataset.

    Args:
        c: the folder data config.

    Returns:
        (train split, val split or None, class names, skipped file paths, native sizes of the
        training images); a split is (images, masks, instances or None); a native size is the
        (height, width) of an image as stored, before any resizing (the model's input scale
        is computed from them).

    Raises:
        FileNotFoundError: missing root, images/ or masks/.
        ValueError: any problem with a file, naming the file.
    """
    root = Path(c.root).expanduser()
    train_pairs, val_pairs = split_pairs(c)
    skipped: list[str] = []
    train, native_sizes = _read_split(train_pairs, c, skipped)
    val = _read_split(val_pairs, c, skipped)[0] if val_pairs else None
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
    if c.num_classes == 1:
        names: tuple[str, ...] = ("background", "foreground")
    else:
        names = ("background", *(f"class_{i}" for i in range(1, c.num_classes)))
    return train, val, names, tuple(skipped), native_sizes
