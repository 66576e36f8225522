"""The training resolution of a plan: how far large images are shrunk, and the crop size.

Two choices, made in this order by `zoo.recipe.planner.plan_recipe`:

- `plan_resample`: images larger than the CPU (GPU) window whose objects need more context
  than the window holds at native resolution (a window of 4x the objects' p90 extent; a whole
  image when the structures span it) are shrunk until it does, but never so far that the
  thin structures (the p25 of the fingerprint's `structure_width`) fall under
  `MIN_STRUCTURE_WIDTH` px, and not at all when the factor would be above `MIN_SHRINK`.
  Measured on the MRI slices enlarged 3x (docs/quality.md, 3 minutes, Dice on the stored
  files): 256 px crops at the stored resolution 93.4 (seed 0), shrunk 0.37x 96.1 (median of
  3 seeds, seed 0 96.3), about what the recipe scores on the slices at their own size;
  shrunk 0.36x, whole slices (the factor rounded down to fit), 96.6 with the mirrored views.
  Where the thin parts forbid a whole image, the factor only brings the short side into the
  window: training takes square crops, which that side bounds.
- `plan_size`: tiles the model can take are used whole; other images give random crops of
  the (resampled) smallest short side, outliers left out (`short_side`), or, for large ones,
  a window holding 4x the objects. The outliers are enlarged to the crop by the data
  pipeline: one thumbnail among photos must not shrink every crop (40 photos of 200-420 px
  and one of 100x130, 1 minute, 3 seeds: 128 px crops 96.45 Dice, 64 px crops 95.75).
"""

from __future__ import annotations

import math

from zoo.recipe.fingerprint import Fingerprint

CPU_CROP_LIMIT = 256
GPU_CROP_LIMIT = 512
# Objects whose p90 extent exceeds this share of the smaller image side are structures that
# span the image (organs, tissue layers, lesions filling the frame), not discrete objects.
SPANNING_EXTENT = 0.5
# Shrinking stops where the thin structures (p25 of the ridge widths) would be this thin: the
# MRI's gray-matter ribbons (p25 3 px) are segmented at 96 Dice at their stored resolution.
MIN_STRUCTURE_WIDTH = 3.0
# A smaller change of resolution is not worth resampling every image (and the prediction).
MIN_SHRINK = 0.9


def _floor_to(x: float, d: int) -> int:
    return max(d, (int(x) // d) * d)


def _ceil_to(x: float, d: int) -> int:
    return max(d, int(math.ceil(x / d)) * d)


def crop_limit(device: str) -> int:
    return CPU_CROP_LIMIT if device == "cpu" else GPU_CROP_LIMIT


def short_side(fp: Fingerprint) -> int:
    """The smallest short side (px, stored) of the training images, leaving out outliers far
    smaller than the rest (`Fingerprint.short_side_floor`); fingerprints that predate it:
    the smallest image's."""
    low = min(fp.image_size_min)
    return max(int(fp.short_side_floor or low), low)


def spans_image(fp: Fingerprint) -> bool:
    """Whether the objects are structures spanning the image rather than discrete objects."""
    e90 = float(fp.object_extent.get("p90", 0) or 0)
    return bool(fp.object_extent.get("count")) and e90 > SPANNING_EXTENT * short_side(fp)


def plan_resample(fp: Fingerprint, device: str = "cpu") -> tuple[float, str]:
    """(`data.resample` factor, reason): 1.0 unless large images need more context."""
    limit = crop_limit(device)
    h, w = (int(v) for v in fp.image_size_median)
    e90 = float(fp.object_extent.get("p90", 0) or 0)
    if max(fp.image_size_max) <= limit:
        return 1.0, f"native resolution: the images fit the {device.upper()} window ({limit} px)"
    if not fp.object_extent.get("count"):
        return 1.0, "native resolution: no objects measured to size the context from"
    spanning = spans_image(fp)
    thin = float(fp.structure_width.get("p25", 0) or 0)
    floor = MIN_STRUCTURE_WIDTH / thin if thin > 0 else 1.0
    want = max(h, w) if spanning else 4 * e90
    need = (
        f"a whole image (structures span the ~{h}x{w} images, p90 extent {e90:g} px)"
        if spanning
        else f"4x the objects (p90 extent {e90:g} px)"
    )
    whole = spanning and limit / want >= floor
    if spanning and not whole:
        # The thin parts forbid fitting a whole image, so training takes square crops, which
        # the short side bounds: shrinking below where that side fits the window only lowers
        # the resolution (96x1024 strips: 96 px crops at any factor under 1).
        want = min(h, w)
        need = f"the images' short side (structures span the ~{h}x{w} images)"
    if want <= limit:
        return 1.0, f"native resolution: a {limit} px window holds {need}"
    if whole:  # rounded down, so that the whole image does fit
        factor = max(math.floor(limit / want * 100) / 100, math.ceil(floor * 100) / 100)
    else:
        factor = min(1.0, math.ceil(max(limit / want, floor) * 100) / 100)
    if factor > MIN_SHRINK:
        return 1.0, (
            f"native resolution: shrinking to fit {need} into {limit} px would make the thin "
            f"structures (p25 width {thin:g} px) thinner than {MIN_STRUCTURE_WIDTH:g} px"
        )
    why = f"shrink {factor:g}x so that {need} fits the {device.upper()} window ({limit} px)"
    if factor > limit / want + 0.01:
        why += (
            f"; not further: the thin structures (p25 width {thin:g} px) keep "
            f">= {MIN_STRUCTURE_WIDTH:g} px"
        )
    return factor, why


def plan_size(
    fp: Fingerprint, divisor: int, resample: float = 1.0, device: str = "cpu"
) -> tuple[list[int], bool, str]:
    """([height, width] of training crops, pad inside the model?, reason) at `resample`."""
    limit = crop_limit(device)

    from zoo.inference.scale import scaled_size  # the rounding training and prediction use

    def at_scale(n: int) -> int:
        return scaled_size((n, n), (resample, resample))[0]

    h, w = (at_scale(v) for v in fp.image_size_median)
    min_side = at_scale(short_side(fp))
    smallest = at_scale(min(fp.image_size_min))
    largest = at_scale(max(fp.image_size_max))
    e90 = float(fp.object_extent.get("p90", 0) or 0) * resample
    has_objects = bool(fp.object_extent.get("count"))
    at = "native resolution" if resample == 1 else f"{resample:g}x resolution"
    sides = "the smallest image side" + ("" if smallest == min_side else " (outliers aside)")
    pad = False
    if fp.same_size and max(h, w) <= limit:
        size = [h, w]
        pad = h % divisor != 0 or w % divisor != 0
        why = (
            f"native size {h}x{w} (all images equal): no resampling, tiles never upsampled"
            if resample == 1
            else f"whole {h}x{w} images at {at}"
        )
    elif largest <= limit:
        side = _floor_to(min_side, divisor)
        size = [side, side]
        why = f"random {side}x{side} crops at {at} (images vary, {sides}: {min_side} px)"
    else:
        want = _ceil_to(4 * e90, divisor) if has_objects else 2 * divisor * 4
        side = min(max(want, 128), limit, _floor_to(min_side, divisor))
        size = [side, side]
        need = f"4x the large objects (p90 {e90:.0f} px)" if has_objects else "enough context"
        if side == _floor_to(min_side, divisor) and side < min(max(want, 128), limit):
            bound = f"as large as {sides} allows (a window of {need} is wider)"
        elif side == limit and side < max(want, 128):
            bound = f"the {device.upper()} limit (a window of {need} is wider)"
        else:
            bound = f"holds {need}"
        why = f"{side} px crops at {at} of ~{h}x{w} images: {bound}"
    if min_side < divisor:
        side = _ceil_to(min_side, divisor)
        size = [side, side]
        why = f"images ({min_side} px) are smaller than the model's minimum {divisor}: upsampled"
    elif smallest < min(size):  # the data pipeline enlarges images smaller than a crop
        why += f"; images far smaller than the rest, down to {smallest} px, are enlarged to it"
    return size, pad, why
