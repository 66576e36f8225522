"""Multilabel masks of the folder dataset (`data.mode=multilabel`): overlapping labels.

Two layouts (docs/data.md, "Multilabel masks"):

    root/masks/<label>/<stem>.png    one binary mask per label (0/1 or 0/255), every image
                                     needs one in every label folder
    root/masks/<stem>.npy            one (H, W, K) array per image, 0/1 per channel

A mask becomes (H, W, K) with 0/1 per label (and `ignore_index` where that label is ignored at
that pixel). Labels are `data.class_names` if given, else the sorted label folder names (or
`label_<k>` for `.npy` masks).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zoo.data.config import FolderDataConfig
from zoo.data.io import IMAGE_SUFFIXES, MASK_SUFFIXES, decode, read_mask
from zoo.errors import DataError, MissingFileError


@dataclass
class LabelMask:
    """A multilabel mask: `labels` (H, W, K) uint8/int32 and the file named in size errors."""

    labels: np.ndarray
    source: Path

    @property
    def shape(self) -> tuple[int, ...]:
        return self.labels.shape


def label_dirs(masks_dir: Path) -> list[Path]:
    """The label subfolders of a `masks/` folder (none: the `.npy` layout)."""
    if not masks_dir.is_dir():
        return []
    return sorted(p for p in masks_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def _masks_dir(c: FolderDataConfig) -> Path:
    root = Path(c.root).expanduser()
    if not root.is_dir():
        raise MissingFileError(f"data.root not found: '{root}' (data=folder data.root=/path)")
    masks = root / "train" / "masks" if (root / "train").is_dir() else root / "masks"
    if not masks.is_dir():
        raise MissingFileError(
            f"Missing folder '{masks}': multilabel data needs masks/<label>/ folders (one binary "
            "mask per label) or (H, W, K) .npy masks in masks/"
        )
    return masks


def label_names(c: FolderDataConfig) -> tuple[str, ...]:
    """The labels of multilabel folder data, checked against `data.num_classes`.

    Raises:
        MissingFileError: no root or masks/ folder.
        DataError: a label of `data.class_names` without a folder, no label folders and no
            `.npy` masks, a `.npy` mask that is not (H, W, K), or a `num_classes` other than
            1 (= from the data) and K.
    """
    masks = _masks_dir(c)
    given = tuple(c.class_names) if c.class_names else None
    dirs = [d.name for d in label_dirs(masks)]
    if dirs:
        names = given or tuple(dirs)
        missing = [n for n in names if n not in dirs]
        if missing:
            raise DataError(
                f"data.class_names has label '{missing[0]}' but '{masks / missing[0]}' does not "
                f"exist; label folders in '{masks}': {', '.join(dirs)}"
            )
    else:
        npys = sorted(p for p in masks.glob("*.npy") if not p.name.startswith("."))
        if not npys:
            raise DataError(
                f"data.mode=multilabel: '{masks}' has neither label folders (masks/<label>/"
                "<name>.png, one binary mask per label) nor (H, W, K) .npy masks"
            )
        shape = np.load(npys[0], mmap_mode="r", allow_pickle=False).shape
        if len(shape) != 3:
            raise DataError(
                f"Mask '{npys[0]}' has shape {shape}; multilabel .npy masks are (H, W, K), one "
                "0/1 channel per label"
            )
        names = given or tuple(f"label_{k}" for k in range(shape[-1]))
        if len(names) != shape[-1]:
            raise DataError(
                f"Mask '{npys[0]}' has {shape[-1]} channels but data.class_names names "
                f"{len(names)} labels ({', '.join(names)}); give one name per channel"
            )
    if c.num_classes not in (1, len(names)):
        raise DataError(
            f"data.num_classes={c.num_classes} but the multilabel data has {len(names)} labels "
            f"({', '.join(names)}); set data.num_classes={len(names)} (or leave it at 1: "
            "taken from the data)"
        )
    return tuple(names)


def resolve(c: Any) -> tuple[str, ...]:
    """The labels of multilabel data; folder data: `c.class_names` and `c.num_classes` (= K)
    set from the files (`label_names`). Generated shapes have fixed labels."""
    if not isinstance(c, FolderDataConfig):
        from zoo.data.shapes import LABEL_NAMES

        return LABEL_NAMES
    names = label_names(c)
    c.class_names, c.num_classes = list(names), len(names)
    return names


FilesFn = Callable[[Path, tuple[str, ...], str], dict[str, Path]]


def label_pairs(
    images: dict[str, Path], masks_dir: Path, labels: Sequence[str], files: FilesFn
) -> list[tuple[Path, tuple[Path, ...]]]:
    """(image, one mask path per label) for the label-folder layout, matched by stem.

    A missing mask is an error, not an empty label: a forgotten file would otherwise train the
    model that the label is absent. Save an all-zero mask where an image has none of a label.
    """
    images_dir = masks_dir.parent / "images"
    per: dict[str, dict[str, Path]] = {}
    for label in labels:
        folder = masks_dir / label
        if not folder.is_dir():
            raise MissingFileError(
                f"Missing label folder '{folder}' (labels: {', '.join(labels)}); every split "
                "needs one masks/<label>/ folder per label"
            )
        per[label] = files(folder, MASK_SUFFIXES, f"'{label}' mask")
        for stem, p in per[label].items():
            if stem not in images:
                raise DataError(
                    f"Mask '{p}' has no image: expected '{images_dir / stem}.png/.jpg/.npy'"
                )
    if not images:
        raise DataError(
            f"No images found in '{images_dir}' (suffixes: {', '.join(IMAGE_SUFFIXES)})"
        )
    pairs = []
    for stem in sorted(images):
        for label in labels:
            if stem not in per[label]:
                raise DataError(
                    f"Image '{images[stem]}' has no '{label}' mask: expected "
                    f"'{masks_dir / label / stem}.png' (an all-zero mask where the label is "
                    "absent)"
                )
        pairs.append((images[stem], tuple(per[label][stem] for label in labels)))
    return pairs


def _allowed(ignore: int | None) -> str:
    return "0/1" + (f" or ignore_index={ignore}" if ignore is not None else "")


def _channel(values: np.ndarray, path: Path, ignore: int | None, what: str, png: bool) -> Any:
    """0/1 (and ignore_index) values of one label; PNG 0/255 read as 0/1 unless ignore is 255."""
    seen = set(np.unique(values).tolist())
    if png and ignore != 255 and seen <= {0, 255}:
        return (values == 255).astype(np.int32)
    bad = sorted(seen - {0, 1} - ({ignore} if ignore is not None else set()))
    if bad:
        hint = "; set data.ignore_index=255 if 255 marks ignored pixels" if 255 in bad else ""
        raise DataError(
            f"Mask '{path}' has value {bad[0]:g}{what}; multilabel masks hold {_allowed(ignore)}"
            f"{' (PNG: 0/255 too)' if png else ''}{hint}"
        )
    return values.astype(np.int32)


def read_labels(ref: Path | tuple[Path, ...], c: FolderDataConfig) -> LabelMask:
    """Read and check one image's multilabel mask: (H, W, K) 0/1 (+ ignore_index).

    Raises:
        DataError: a value other than 0/1 (0/255 for label images) or ignore_index, a `.npy`
            mask that is not (H, W, K) with K = len(`data.class_names`), or per-label masks of
            different sizes; each names the file.
    """
    ignore = c.ignore_index
    names = list(c.class_names or [])
    if isinstance(ref, tuple):
        chans: list[np.ndarray] = []
        for p in ref:
            m = read_mask(p)
            if chans and m.shape != chans[0].shape:
                raise DataError(
                    f"Mask '{p}' is {m.shape[0]}x{m.shape[1]} but '{ref[0]}' is "
                    f"{chans[0].shape[0]}x{chans[0].shape[1]}; the masks of one image must match"
                )
            chans.append(_channel(m, p, ignore, f" (label '{p.parent.name}')", png=True))
        arr, source = np.stack(chans, -1), ref[0]
    else:
        source = Path(ref)
        raw = np.asarray(decode(source, "mask"))
        # K: the resolved labels (`resolve`); any K when the labels are not known yet.
        k = len(names) if names else (raw.shape[-1] if raw.ndim == 3 else 0)
        if raw.ndim != 3 or raw.shape[-1] != k or k < 1:
            labels = f" ({', '.join(names)})" if names else ""
            raise DataError(
                f"Mask '{source}' has shape {raw.shape}; expected (H, W, {k or 'K'}): one 0/1 "
                f"channel per label{labels}"
            )
        if raw.dtype.kind not in "iubf":
            raise DataError(f"Mask '{source}' has dtype {raw.dtype}; expected integers or bool")
        if raw.dtype.kind == "f" and not np.isfinite(raw).all():
            raise DataError(f"Mask '{source}' has NaN or Inf; expected {_allowed(ignore)}")
        arr = _channel(raw, source, ignore, "", png=False)
    dtype = np.uint8 if ignore is None or 0 <= ignore <= 255 else np.int32
    return LabelMask(arr.astype(dtype), source)
