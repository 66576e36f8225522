"""The planned batch: its size from a pixel target, capped by the distinct samples the data has.

A batch of ~128k pixels on CPU (2M on accelerators), 4..16 (32) samples, and at most half of
the distinct samples, so that a step never sees the whole training set: half the images for
tiles the window holds whole, half the crops for images several windows large (6 images of
900x1200 hold 378 crops of 128 px; the data pipeline then draws several crops per image and
pass, `zoo.data.pipeline.distinct_windows`, which counts them the same way).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from zoo.recipe.fingerprint import Fingerprint

CPU_BATCH_PIXELS = 8 * 128 * 128
GPU_BATCH_PIXELS = 32 * 256 * 256


@dataclass(frozen=True)
class BatchPlan:
    """A planned batch.

    Attributes:
        size: samples per batch.
        reason: the line printed in the recipe's table.
        samples: distinct samples of the training set (images, or the crops they hold).
        unit: "images" or "crops", what `samples` counts.
        share: the share of the training pixels one step sees (a pass is every image's
            pixels once), which the width rule counts passes with.
    """

    size: int
    reason: str
    samples: int
    unit: str
    share: float


def _pow2_floor(x: float) -> int:
    return 1 << max(0, int(math.floor(math.log2(max(x, 1)))))


def plan_batch(fp: Fingerprint, crop: list[int], resample: float, device: str) -> BatchPlan:
    """The batch for training crops of `crop` [H, W] at `resample` on `device`.

    Example:
        >>> fp = fingerprint_folder("cells")  # 12 tiles of 128x128
        >>> plan_batch(fp, [128, 128], 1.0, "cpu").size  # 8 by the pixels, half of 12
        6
    """
    cpu = device == "cpu"
    target = CPU_BATCH_PIXELS if cpu else GPU_BATCH_PIXELS
    batch = min(max(_pow2_floor(target / (crop[0] * crop[1])), 4), 16 if cpu else 32)
    h, w = (int(v * resample) for v in fp.image_size_median)
    per_image = max(1, h // crop[0]) * max(1, w // crop[1])
    samples = fp.num_train * per_image
    cap = max(1, samples // 2)
    batch = max(1, min(batch, cap))
    unit = "crops" if per_image > 1 else "images"
    half = f"half of the {fp.num_train} images"
    if per_image > 1:
        half = f"half of the {samples} crops that the {fp.num_train} images hold"
    why = f"~{target // 1024}k pixels per batch on {device.upper()}"
    why += f", at most {half}" if batch == cap else ""
    seen = batch * min(h, crop[0]) * min(w, crop[1])
    share = seen / max(fp.num_train * h * w, 1)
    return BatchPlan(batch, why, samples, unit, share)
