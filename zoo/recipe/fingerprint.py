"""Dataset fingerprint: the statistics a training recipe is planned from, computed in seconds.

`fingerprint_arrays(images, masks)` takes in-memory arrays; `zoo.recipe.folder.fingerprint_folder`
reads a folder dataset with the app's own readers and caches the result. Both return a
`Fingerprint` (JSON-serializable via `as_dict`).

What is measured (all on the training split; at most `max_samples` images, evenly spaced):

- image sizes (smallest, median and largest height and width, and the smallest short side
  once outliers are left out: a thumbnail among photos should not set the crop size); effective
  channels (1 when all channels of every image are equal, e.g. gray stored as RGB; else the
  images' count); how the files store intensities ("uint8" for 8-bit files, "float" for
  16-bit / float files read as [0, 1]);
- intensity statistics per channel in [0, 1] units (mean, std, 0.5/50/99.5 percentiles), and
  how much the labelled structures' brightness varies between images (`foreground_median_sd`:
  the standard deviation over images of the foreground's median gray level; several classes:
  the largest of the classes' own);
- class frequencies (pixel fractions, ignored pixels excluded) and the share of images with
  foreground;
- objects: connected components of each foreground class (instance ids for instance masks)
  of at least 9 px:
  count per image and size, as the bounding-box extent (longest side, px) and the
  equivalent-circle diameter, both at the stored resolution; the share of objects and of images
  whose foreground touches the image border; the structures' local widths (`structure_width`,
  twice the distance to the background along each structure's ridge: how thin the thin parts
  are, which sets how far large images can be shrunk);
- orientation (see `zoo.recipe.stats.orientation_scores`);
- fluorescence-likeness (see `zoo.recipe.stats.microscopy_cues`): intensity augmentations.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zoo.recipe.stats import microscopy_cues, orientation_scores, per_image, summary

FINGERPRINT_VERSION = 11  # bump when a statistic changes: cached fingerprints are recomputed


@dataclass
class Fingerprint:
    """Dataset statistics (see the module docstring). Sizes are (height, width) in pixels."""

    num_train: int
    num_val: int
    num_classes: int
    image_size_min: list[int]
    image_size_median: list[int]
    image_size_max: list[int]
    same_size: bool
    channels: int
    storage: str
    intensity: dict[str, list[float]]
    class_frequencies: list[float]
    foreground_image_fraction: float
    objects_per_image: dict[str, float]
    object_extent: dict[str, float]
    object_diameter: dict[str, float]
    border_object_fraction: float
    border_image_fraction: float
    orientation: dict[str, Any]
    microscopy: dict[str, Any]
    sampled: int
    key: str = ""
    seconds: float = 0.0
    source: str = ""
    version: int = FINGERPRINT_VERSION
    notes: list[str] = field(default_factory=list)
    # p10 / p25 / median / p90 of `zoo.recipe.stats.ridge_widths` over the sampled images.
    structure_width: dict[str, float] = field(default_factory=dict)
    # The smallest short side of the images, leaving out outliers under 3/4 of the 10th
    # percentile (`zoo.data.sizing.smallest_regular`); 0 in fingerprints that predate it.
    short_side_floor: int = 0
    # Multilabel data (`data.mode=multilabel`): the labels and each one's share of the pixels;
    # every other statistic is of their union (a pixel with any label is foreground).
    labels: list[str] = field(default_factory=list)
    label_frequencies: list[float] = field(default_factory=list)

    @property
    def foreground_fraction(self) -> float:
        """Share of labeled pixels that are not background."""
        return float(1.0 - self.class_frequencies[0]) if self.class_frequencies else 0.0

    @property
    def oriented(self) -> bool | None:
        return self.orientation.get("oriented")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Fingerprint:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def save(self, path: str | os.PathLike) -> Path:
        """Write the fingerprint as JSON (e.g. into the run directory)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.as_dict(), indent=2))
        os.replace(tmp, path)
        return path


def _short_side_floor(sizes: np.ndarray) -> int:
    from zoo.data.sizing import smallest_regular  # the rule the folder defaults crop by

    return smallest_regular(sizes.min(axis=1).tolist())


def fingerprint_arrays(
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    *,
    num_classes: int = 1,
    ignore_index: int | None = None,
    instances: Sequence[np.ndarray] | None = None,
    num_val: int = 0,
    max_samples: int = 512,
    workers: int = 4,
    source: str = "arrays",
) -> Fingerprint:
    """Fingerprint of in-memory training images and class masks.

    Args:
        images: (H, W), (H, W, C) arrays: uint8 (0..255), uint16 (0..65535) or float in [0, 1].
        masks: (H, W) integer class ids (binary: 0/1), same sizes as the images.
        num_classes: 1 for binary masks, else the number of classes.
        ignore_index: mask value excluded from all statistics.
        instances: optional (H, W) instance ids (objects are then instances, not components).
        num_val: validation samples (reported only).
        max_samples: at most this many images are read, evenly spaced.
        workers: threads.
        source: a label stored in the result.

    Example:
        >>> img = np.zeros((64, 64), np.uint8); m = np.zeros((64, 64), np.int32)
        >>> m[10:20, 10:20] = 1
        >>> fingerprint_arrays([img] * 4, [m] * 4).object_extent["median"]
        10.0
    """
    start = time.perf_counter()
    if len(images) != len(masks) or not len(images):
        raise ValueError(
            f"Invalid images/masks: expected equally many (>= 1). Received: {len(images)} images, "
            f"{len(masks)} masks"
        )
    pick = np.unique(np.linspace(0, len(images) - 1, min(max_samples, len(images))).astype(int))
    rng = np.random.default_rng(0)
    seeds = rng.integers(0, 2**31, size=len(pick))

    def one(j: int) -> dict[str, Any]:
        i = int(pick[j])
        mask = np.asarray(masks[i]).astype(np.int64)
        if np.asarray(images[i]).shape[:2] != mask.shape:
            raise ValueError(
                f"Image {i} is {np.asarray(images[i]).shape[:2]} but its mask is {mask.shape}"
            )
        inst = np.asarray(instances[i]) if instances is not None else None
        return per_image(
            images[i], mask, inst, num_classes, ignore_index, np.random.default_rng(seeds[j])
        )

    with ThreadPoolExecutor(max(1, workers)) as pool:
        stats = list(pool.map(one, range(len(pick))))
    return _combine(stats, len(images), num_val, num_classes, source, start)


def _combine(
    stats: list[dict[str, Any]],
    num_train: int,
    num_val: int,
    num_classes: int,
    source: str,
    start: float,
) -> Fingerprint:
    sizes = np.array([s["size"] for s in stats])
    channels = 1 if all(s["gray"] for s in stats) else max(s["channels"] for s in stats)
    storage = "uint8" if all(s["uint8"] for s in stats) else "float"
    pixels = np.concatenate([s["pixels"] for s in stats])[:, :channels]
    pct = np.percentile(pixels, [0.5, 50, 99.5], axis=0)
    intensity = {
        "mean": pixels.mean(axis=0).round(5).tolist(),
        "std": pixels.std(axis=0).round(5).tolist(),
        "p0_5": pct[0].round(5).tolist(),
        "p50": pct[1].round(5).tolist(),
        "p99_5": pct[2].round(5).tolist(),
    }
    # Per foreground class, the spread over images of its median level; the largest counts.
    # Empty with fewer than two images with a class: no between-image variation to measure.
    sds = []
    for c in range(max(num_classes, 2) - 1):
        levels = [s["fg_levels"][c] for s in stats if s["fg_levels"][c] is not None]
        if len(levels) > 1:
            sds.append(float(np.std(levels)))
    intensity["foreground_median_sd"] = [round(max(sds), 5)] if sds else []
    counts = np.sum([s["counts"] for s in stats], axis=0).astype(np.float64)
    freqs = (counts / max(counts.sum(), 1)).round(6).tolist()
    extents = [e for s in stats for e in s["extents"]]
    diameters = [d for s in stats for d in s["diameters"]]
    widths = np.concatenate([s["widths"] for s in stats])
    width_q = np.percentile(widths, [10, 25, 50, 90]) if widths.size else np.zeros(4)
    per_image = [len(s["extents"]) for s in stats]
    n_obj = max(len(extents), 1)
    contrasts = [s["contrast"] for s in stats if s["contrast"] is not None]
    orientation = orientation_scores(
        np.stack([s["thumb"] for s in stats]), np.stack([s["mask_thumb"] for s in stats])
    )
    microscopy = microscopy_cues(
        channels,
        storage,
        [s["bg_level"] for s in stats],
        [s["dark_fraction"] for s in stats],
        contrasts,
        [s["bg_above_fg"] for s in stats if s["bg_above_fg"] is not None],
    )
    notes = []
    if float(np.max(pct[2])) < 0.05:
        notes.append(
            f"intensities use only {float(np.max(pct[2])):.1%} of the value range "
            "(e.g. 8-bit data in 16-bit files)"
        )
    return Fingerprint(
        num_train=int(num_train),
        num_val=int(num_val),
        num_classes=int(num_classes),
        image_size_min=sizes.min(axis=0).tolist(),
        image_size_median=np.median(sizes, axis=0).astype(int).tolist(),
        image_size_max=sizes.max(axis=0).tolist(),
        same_size=bool((sizes == sizes[0]).all()),
        short_side_floor=_short_side_floor(sizes),
        channels=channels,
        storage=storage,
        intensity=intensity,
        class_frequencies=freqs,
        foreground_image_fraction=round(
            float(np.mean([s["counts"][1:].sum() > 0 for s in stats])), 4
        ),
        objects_per_image={k: round(v, 3) for k, v in summary(per_image).items()},
        object_extent={k: round(v, 3) for k, v in summary(extents).items()},
        object_diameter={k: round(v, 3) for k, v in summary(diameters).items()},
        border_object_fraction=round(sum(s["border_objects"] for s in stats) / n_obj, 4),
        border_image_fraction=round(float(np.mean([s["touches"] for s in stats])), 4),
        orientation=orientation,
        microscopy=microscopy,
        sampled=len(stats),
        seconds=round(time.perf_counter() - start, 3),
        source=source,
        notes=notes,
        structure_width={
            "count": int(widths.size),
            **{k: round(float(v), 3) for k, v in zip(("p10", "p25", "median", "p90"), width_q)},
        },
    )
