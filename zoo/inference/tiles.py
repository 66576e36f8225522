"""Cutting one tile out of an image (resampled to the model's scale) and weighting its output
back onto the native rows and columns it covers (`TiledPredictor`'s inner steps)."""

from __future__ import annotations

import numpy as np

from zoo.inference import scale as scaling
from zoo.inference.tiling import AxisPlan


def cut_tile(
    image: np.ndarray,
    py: AxisPlan,
    px: AxisPlan,
    k: int,
    j: int,
    out: np.ndarray,
    channels: int | None,
) -> None:
    """Fill `out` (th, tw, C) with tile (k, j): cut or resampled, edge-padded."""
    y0, x0 = py.starts[k], px.starts[j]
    ch, cw = py.content(k), px.content(j)
    if py.scaled == py.size and px.scaled == px.size:
        region = scaling.match_channels(np.asarray(image[y0 : y0 + ch, x0 : x0 + cw]), channels)
        pixels = scaling.to_float(region)
    else:
        fy, fx = py.size / py.scaled, px.size / px.scaled
        box = (y0 * fy, x0 * fx, (y0 + ch) * fy, (x0 + cw) * fx)
        pixels = scaling.resample_region(image, box, (ch, cw), channels)
    out[:ch, :cw] = pixels
    # Edge padding (as the untiled predictor did) when the image is shorter than a tile.
    if ch < out.shape[0]:
        out[ch:, :cw] = out[ch - 1 : ch, :cw]
    if cw < out.shape[1]:
        out[:, cw:] = out[:, cw - 1 : cw]


def tile_contribution(result: np.ndarray, py: AxisPlan, px: AxisPlan, k: int, j: int) -> np.ndarray:
    """Tile (k, j)'s weighted contribution to its native rows and columns."""
    taps_y, taps_x = py.taps[k], px.taps[j]
    (ya, yb), (xa, xb) = py.ranges[k], px.ranges[j]
    if taps_y is None:
        rows = result[ya - py.starts[k] : yb - py.starts[k]]
    else:
        i0, i1, f = taps_y
        rows = result[i0] + (result[i1] - result[i0]) * f[:, None, None]
    if taps_x is None:
        cols = rows[:, xa - px.starts[j] : xb - px.starts[j]]
    else:
        j0, j1, g = taps_x
        cols = rows[:, j0] + (rows[:, j1] - rows[:, j0]) * g[None, :, None]
    weight = py.factors[k][:, None, None] * px.factors[j][None, :, None]
    return cols * weight
