"""Fingerprints of folder datasets, read as the training app reads them and cached per dataset.

`fingerprint_folder(root)` reads a `data=folder` dataset with the app's own readers and mask rules
(`zoo.data.folder`, `zoo.data.io`, `zoo.data.multilabel`) and fingerprints it with
`zoo.recipe.fingerprint.fingerprint_arrays`. The result is cached under
``$ZOO_CACHE_DIR/fingerprints`` (default ~/.cache/segzoo) by a key of the files' names, sizes and
modification times plus the mask settings, so a second run on the same data costs milliseconds.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from zoo.errors import MissingFileError
from zoo.recipe.fingerprint import FINGERPRINT_VERSION, Fingerprint, fingerprint_arrays


def cache_root() -> Path:
    """The recipe's cache folder: $ZOO_CACHE_DIR, default ~/.cache/segzoo."""
    return Path(os.environ.get("ZOO_CACHE_DIR", Path.home() / ".cache" / "segzoo"))


def _cache_dir() -> Path:
    return cache_root() / "fingerprints"


def folder_key(pairs: Sequence[tuple[Path, Path]], num_val: int, settings: dict[str, Any]) -> str:
    """Cache key: names, sizes and mtimes of every file plus the mask settings (no reading)."""
    h = hashlib.sha1(f"v{FINGERPRINT_VERSION}|{num_val}|{sorted(settings.items())}".encode())
    for image, mask in pairs:  # a multilabel mask is a tuple of one file per label
        for p in (image, *(mask if isinstance(mask, tuple) else (mask,))):
            st = p.stat()
            h.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def fingerprint_folder(
    root: str | os.PathLike,
    *,
    num_classes: int = 1,
    ignore_index: int | None = None,
    mask_type: str = "class",
    cache: bool = True,
    max_samples: int = 512,
    workers: int = 4,
    val_ratio: float | None = None,
    split_seed: int = 0,
    channels: int = 3,
    mask_suffix: str = "",
    class_colors: list[list[int]] | None = None,
    mode: str = "class",
    class_names: list[str] | None = None,
) -> Fingerprint:
    """Fingerprint of a folder dataset (root/images + root/masks, or root/train + root/val).

    Files are read with the training app's readers and mask rules (`zoo.data.io`,
    `zoo.data.folder.map_mask`), so the statistics are of exactly what training sees before
    resizing. With `root/images`, every image counts as training data, unless `val_ratio` is
    given: then the app's own split (`zoo.data.folder.split_pairs` with `split_seed`) is used.
    `mode="multilabel"` reads one 0/1 mask per label (`zoo.data.multilabel`, the labels of
    `class_names` or the label folders): the statistics are of the labels' union, plus each
    label's share of the pixels (`label_frequencies`).

    Raises:
        MissingFileError / DataError: as the folder dataset does, naming the file.
    """
    from zoo.data import folder as zfolder
    from zoo.data import multilabel as zmultilabel
    from zoo.data.config import FolderDataConfig
    from zoo.recipe.stats import label_union

    root = Path(root).expanduser()
    if not root.is_dir():
        raise MissingFileError(f"data.root not found: '{root}' (data=folder data.root=/path)")
    settings: dict[str, Any] = {"num_classes": num_classes, "ignore_index": ignore_index}
    settings["mask_type"] = mask_type
    labels = None
    if mode == "multilabel":  # the labels resolved as training resolves them
        settings.update(mode=mode, class_names=list(class_names or []))
        c = FolderDataConfig(root=str(root), mask_suffix=mask_suffix, **settings)
        labels = zmultilabel.resolve(c)
        settings.update(num_classes=len(labels), class_names=list(labels))
    if (root / "train").is_dir():
        pairs = zfolder.find_pairs(root / "train", labels, mask_suffix)
        val = root / "val"
        num_val = len(zfolder.find_pairs(val, labels, mask_suffix)) if val.is_dir() else 0
    elif val_ratio is not None:
        split = FolderDataConfig(root=str(root), val_ratio=val_ratio, split_seed=split_seed,
                                 mask_suffix=mask_suffix, **settings)  # fmt: skip
        pairs, val_pairs = zfolder.split_pairs(split)
        num_val = len(val_pairs)
    else:
        pairs, num_val = zfolder.find_pairs(root, labels, mask_suffix), 0
    if channels != 3:  # read as training reads them (`data.channels`)
        settings["channels"] = int(channels)
    if class_colors:  # RGB masks, one color per class (`zoo.data.colors`)
        settings["class_colors"] = [[int(x) for x in v] for v in class_colors]
    key = folder_key(pairs, num_val, {**settings, "max_samples": max_samples})
    path = _cache_dir() / f"{key}.json"
    if cache and path.exists():
        try:
            fp = Fingerprint.from_dict(json.loads(path.read_text()))
            if fp.version == FINGERPRINT_VERSION:
                return fp
        except (ValueError, TypeError):
            pass  # a broken cache entry is recomputed
    c = FolderDataConfig(root=str(root), **settings)
    pick = np.unique(np.linspace(0, len(pairs) - 1, min(max_samples, len(pairs))).astype(int))

    def read(i: int):
        image, mask, instances = zfolder.read_pair(pairs[int(i)], c)  # as training reads it
        if labels is not None:  # mask: (H, W, K) 0/1 labels
            return (image, *label_union(mask, ignore_index))
        return image, mask, instances, None

    with ThreadPoolExecutor(max(1, workers)) as pool:
        samples = list(pool.map(read, pick))
    images, masks, inst, counts = zip(*samples)
    fp = fingerprint_arrays(
        list(images),
        list(masks),
        num_classes=1 if labels is not None else num_classes,
        ignore_index=ignore_index,
        instances=list(inst) if mask_type == "instance" and labels is None else None,
        num_val=num_val,
        max_samples=max_samples,
        workers=workers,
        source=str(root),
    )
    if labels is not None:
        ones, valid = np.sum(counts, axis=0)
        fp.labels = list(labels)
        fp.label_frequencies = [round(float(o / max(v, 1)), 6) for o, v in zip(ones, valid)]
    fp.num_train = len(pairs)
    fp.key = key
    if cache:
        try:
            fp.save(path)
        except OSError:
            pass  # a read-only cache only costs the recomputation
    return fp
