"""Where the tiles go and how much each one counts at every output pixel.

Everything here is one-dimensional: tile positions form a product grid (rows x columns) and
every blend weight is a product ``w_row(y) * w_col(x)``, so the normalizer of the blend,
``sum over tiles of w``, is a product of two 1-D sums too. It is computed up front, per axis,
and folded into the weights; no full-size weight accumulator exists.

Coordinates: the model sees the image resampled to ``scaled`` pixels per axis (see
`zoo.inference.scale`); native pixel ``i`` has its center at the scaled coordinate
``u(i) = (i + 0.5) * scaled / size - 0.5`` (``u(i) = i`` when nothing is resampled). A tile
starting at scaled pixel ``p`` with length ``t`` owns the half-open interval
``[p - 0.5, p + t - 0.5)``; the first and last tiles of an axis also own everything before or
after it (the image border).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

BLENDS = ("gaussian", "uniform", "center")
# nnU-Net's Gaussian: sigma = tile / 8, so the weight at a tile edge is exp(-8) ~ 3.4e-4.
SIGMA_SCALE = 1.0 / 8.0


def tile_step(tile: int, overlap: float) -> int:
    """Nominal distance between tile starts: ``floor(tile * (1 - overlap))``, at least 1."""
    return max(1, int(math.floor(tile * (1.0 - overlap) + 1e-9)))


def tile_starts(size: int, tile: int, overlap: float, align: int = 1) -> list[int]:
    """Start offsets of tiles of length `tile` covering ``[0, size)``.

    Tiles are spread evenly, no gap between consecutive starts is larger than
    `tile_step(tile, overlap)`, every start but the last is a multiple of `align` (the
    model's divisor, so strided layers see the same pixel phase in every tile), and the last
    tile ends exactly at `size` (shifted back, never hanging off the edge). A `size` up to
    `tile` gives the single start 0.

    Example:
        >>> tile_starts(1000, 512, 0.5, align=32)
        [0, 256, 488]
    """
    if size <= tile:
        return [0]
    step = tile_step(tile, overlap)
    align = align if 1 <= align <= step else 1
    span = size - tile
    n = math.ceil(span / step) + 1
    while True:
        starts = [
            min(int(math.floor(k * span / (n - 1) / align + 0.5)) * align, span) for k in range(n)
        ]
        starts[-1] = span
        starts = sorted(set(starts))
        if max(b - a for a, b in zip(starts, starts[1:])) <= step:
            return starts
        n += 1  # alignment widened a gap: one more tile


def profile(
    blend: str,
    local: np.ndarray,
    tile: int,
    first: bool,
    last: bool,
    lo: float = -math.inf,
    hi: float = math.inf,
) -> np.ndarray:
    """1-D blend weight of one tile at tile-local coordinates `local` (float64).

    - "gaussian": ``exp(-(local - c)^2 / (2 sigma^2))``, ``c = (tile - 1) / 2``,
      ``sigma = tile / 8`` (nnU-Net), held at its peak value 1 on the side of a tile that
      lies on the image border (the model saw the true border there, as in training);
    - "uniform": 1 (a plain average of the overlapping tiles);
    - "center": 1 on ``[lo, hi)``, the pixels nearer to this tile's center than to any
      other tile's, else 0 (each pixel comes from exactly one tile: the one in which it is
      farthest from an edge).
    """
    if blend == "uniform":
        return np.ones_like(local)
    if blend == "center":
        return ((local >= lo) & (local < hi)).astype(np.float64)
    z = local - (tile - 1) / 2.0
    if first:
        z = np.where(z < 0, 0.0, z)
    if last:
        z = np.where(z > 0, 0.0, z)
    return np.exp(-0.5 * (z / (tile * SIGMA_SCALE)) ** 2)


@dataclass
class AxisPlan:
    """How the tiles of one axis map onto the native pixels of that axis.

    Attributes:
        size: native length.
        scaled: length the model sees (after resampling).
        tile: tile length (the scaled length padded to the divisor if shorter than a tile).
        starts: scaled start of every tile.
        ranges: native ``[a, b)`` each tile writes to.
        factors: float32 blend weight / normalizer for every native pixel of the range; the
            factors of all tiles covering a pixel sum to 1.
        taps: per tile, None when no resampling happens (native pixel ``i`` is tile pixel
            ``i - start``), else ``(i0, i1, frac)``: the two tile pixels to interpolate
            linearly and the weight of the second.
    """

    size: int
    scaled: int
    tile: int
    starts: list[int]
    ranges: list[tuple[int, int]] = field(default_factory=list)
    factors: list[np.ndarray] = field(default_factory=list)
    taps: list[tuple[np.ndarray, np.ndarray, np.ndarray] | None] = field(default_factory=list)

    def content(self, k: int) -> int:
        """Number of real (unpadded) scaled pixels in tile `k`."""
        return min(self.tile, self.scaled - self.starts[k])


def plan_axis(
    size: int, scaled: int, tile: int, overlap: float, blend: str, align: int = 1
) -> AxisPlan:
    """Tile starts, native ranges, interpolation taps and normalized weights of one axis.

    Args:
        size: native length (pixels of the input image).
        scaled: length after resampling to the model's scale (`size` when not resampled).
        tile: tile length; when `scaled` is shorter, pass the padded length (one tile).
        overlap: fraction of a tile shared with its neighbour, in [0, 1).
        blend: one of `BLENDS`.
        align: tile starts are multiples of it (except the last).
    """
    starts = tile_starts(scaled, tile, overlap, align)
    plan = AxisPlan(size=size, scaled=scaled, tile=tile, starts=starts)
    identity = scaled == size
    u = np.arange(size, dtype=np.float64)
    if not identity:
        u = (u + 0.5) * (scaled / size) - 0.5
    centers = [s + (tile - 1) / 2.0 for s in starts]
    n = len(starts)
    norm = np.zeros(size, np.float64)
    weights = []
    for k, p in enumerate(starts):
        lo = -math.inf if k == 0 else p - 0.5
        hi = math.inf if k == n - 1 else p + tile - 0.5
        a, b = (int(i) for i in np.searchsorted(u, [lo, hi], side="left"))
        local = u[a:b] - p
        c_lo = -math.inf if k == 0 else (centers[k - 1] + centers[k]) / 2.0 - p
        c_hi = math.inf if k == n - 1 else (centers[k] + centers[k + 1]) / 2.0 - p
        w = profile(blend, local, tile, k == 0, k == n - 1, c_lo, c_hi)
        norm[a:b] += w
        weights.append(w)
        plan.ranges.append((a, b))
        if identity:
            plan.taps.append(None)
        else:
            last = plan.content(k) - 1
            pos = np.clip(local, 0.0, last)
            i0 = np.floor(pos).astype(np.int64)
            i1 = np.minimum(i0 + 1, last)
            plan.taps.append((i0, i1, (pos - i0).astype(np.float32)))
    if not np.all(norm > 0):  # cannot happen with the profiles above; guards new ones
        raise RuntimeError(f"tiles leave pixels uncovered (size={size}, starts={starts})")
    for (a, b), w in zip(plan.ranges, weights):
        plan.factors.append((w / norm[a:b]).astype(np.float32))
    return plan


def coverage(plan: AxisPlan) -> np.ndarray:
    """Sum of the normalized factors at every native pixel (1 everywhere for a valid plan)."""
    total = np.zeros(plan.size, np.float64)
    for (a, b), f in zip(plan.ranges, plan.factors):
        total[a:b] += f
    return total
