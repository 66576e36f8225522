"""The training crop size `data.image_size: null` gives a folder dataset (`auto_image_size`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

AUTO_SIZE_LIMIT = 256  # px: the longest side of automatic training crops (CPU-sized)
# A side under this share of the 10th percentile of the images' sides is an outlier's (a
# thumbnail among photos): it does not set the crop size, and the image is enlarged to it.
OUTLIER_SIDE = 0.75


def smallest_regular(values: Sequence[int]) -> int:
    """The smallest of `values` once outliers, under `OUTLIER_SIDE` of the 10th percentile
    (an image's own value, not interpolated), are left out.

    Example:
        >>> smallest_regular([300] * 19 + [100]), smallest_regular([300] * 19 + [260])
        (300, 260)
    """
    v = np.asarray(values)
    return int(v[v >= OUTLIER_SIDE * np.percentile(v, 10, method="lower")].min())


def auto_image_size(
    sizes: Sequence[tuple[int, int]], divisor: int = 32, limit: int = AUTO_SIZE_LIMIT
) -> tuple[list[int], str]:
    """The training size `data.image_size: null` gives a folder: ([height, width], reason).

    Native resolution: crops as large as the smallest image, at most `limit` px a side, rounded
    down to a multiple of the model's `divisor` (equal tiles of a multiple are used whole; a
    100 px tile trains on 96 px crops for a divisor of 32). Images far smaller than the rest
    (`smallest_regular`: a thumbnail among photos) do not shrink every crop; they are enlarged
    to it as they are read. Only images smaller than `divisor` itself are otherwise upsampled
    (to `divisor`), since the model cannot take them.

    Example:
        >>> auto_image_size([(128, 128)] * 3)
        ([128, 128], "the images' native size 128x128, used whole")
    """
    d = max(int(divisor), 1)
    low = [smallest_regular([int(s[i]) for s in sizes]) for i in (0, 1)]
    least = [min(int(s[i]) for s in sizes) for i in (0, 1)]
    same = len({(int(s[0]), int(s[1])) for s in sizes}) == 1
    top = max(limit // d, 1) * d
    size = [min(max(v // d, 1) * d, top) for v in low]
    shape = f"{size[0]}x{size[1]}"
    if any(v < d for v in low):
        why = f"images ({low[0]}x{low[1]}) are smaller than the model's divisor {d}: upsampled"
    elif same and size == low:
        why = f"the images' native size {shape}, used whole"
    elif max(low) <= top and size == low:
        why = f"native-resolution {shape} crops, the size of the smallest image"
    elif max(low) <= top:
        why = (
            f"native-resolution {shape} crops: the smallest image ({low[0]}x{low[1]}) "
            f"rounded down to a multiple of {d}"
        )
    else:
        why = f"native-resolution {shape} crops (images are >= {low[0]}x{low[1]}; <= {top} px)"
    if least != low and not any(v < d for v in low):
        why += (
            f"; images far smaller than the rest (down to {least[0]}x{least[1]}) are enlarged "
            "to the crop"
        )
    return size, why
