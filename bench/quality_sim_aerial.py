"""STAND-IN aerial images: RGB tiles of buildings among roads, trees and fields.

The quality table has no real aerial or natural-image set (the only one in the package
archives, SpaceNet's sample tile, has labels that do not match its image; docs/quality.md),
so this simulation stands in for the domain: colour images where the class is told apart by
shape and colour together rather than by brightness alone, as in the grayscale sets.

Each 256x256 tile holds fields (two ground colours mixed by a smooth random field, with
fine texture), 0-2 straight roads, 3-12 buildings (rectangles 12-48 px a side, turned to the
nearest road's direction, roofs in concrete, tile or dark colours, half of some gabled roofs
lit brighter), their shadows cast the same way in every tile (a fixed sun), trees (round
dark-green crowns, some over a building's edge), paved yards in roof colours but flat (no
shadow), haze, blur and sensor noise. The mask is the buildings' footprints, as in SpaceNet:
the parts under a tree crown are still building.
"""

from __future__ import annotations

import numpy as np

SIZE = 256
SUN = (5, 4)  # shadow offset (rows, columns) in pixels: the same sun in every tile
ROOFS = np.array(  # RGB: concrete, light concrete, red tile, brown tile, dark roofing
    [[168, 166, 160], [205, 202, 196], [160, 82, 62], [128, 92, 70], [74, 74, 80]], float
)
GRASS, SOIL, ROAD, TREE = (86, 112, 62), (150, 128, 96), (118, 118, 114), (42, 70, 38)
PAVED = (160, 158, 152)


def _cast(shape: np.ndarray) -> np.ndarray:
    """The shadow of `shape`: shifted away from the sun, nothing wrapped round the tile."""
    out = np.zeros_like(shape)
    out[SUN[0] :, SUN[1] :] = shape[: -SUN[0], : -SUN[1]]
    return out


def _rect(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, h: float, w: float, a: float):
    """Pixels of a rectangle centred at (cy, cx), sides h x w, turned by `a` radians; also the
    coordinate along its height (for the gabled roof's two halves)."""
    dy, dx = yy - cy, xx - cx
    u = dy * np.cos(a) + dx * np.sin(a)
    v = -dy * np.sin(a) + dx * np.cos(a)
    return (np.abs(u) <= h / 2) & (np.abs(v) <= w / 2), u


def simulate_aerial(
    n: int, size: int = SIZE, seed: int = 0
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """`n` (name, RGB uint8 image, binary footprint mask) tiles; deterministic for a seed."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    out = []
    for i in range(n):
        mix = ndimage.gaussian_filter(rng.normal(size=(size, size)), size / 10)
        mix = np.clip(0.5 + mix / (4 * mix.std() + 1e-9), 0, 1)[..., None]
        image = mix * np.array(GRASS) + (1 - mix) * np.array(SOIL)
        image = (
            image
            * (1 + 0.08 * ndimage.gaussian_filter(rng.normal(size=(size, size)), 1))[..., None]
        )
        taken = np.zeros((size, size), bool)  # roads and buildings, with a margin
        angles = [rng.uniform(0, np.pi)]
        for _ in range(rng.integers(0, 3)):  # roads through the tile
            a = angles[-1] + rng.choice([0.0, np.pi / 2]) + rng.normal(0, 0.05)
            road, _ = _rect(
                yy, xx, *rng.uniform(0.2, 0.8, 2) * size, 3 * size, rng.uniform(9, 16), a
            )
            image[road] = np.array(ROAD) * rng.uniform(0.9, 1.1)
            taken |= ndimage.binary_dilation(road, iterations=4)
            angles.append(a)
        for _ in range(rng.integers(0, 4)):  # paved yards: roof-coloured, but flat (no shadow)
            a = rng.choice(angles) + rng.normal(0, 0.04)
            yard, _ = _rect(yy, xx, *rng.uniform(0, size, 2), *rng.uniform(14, 40, 2), a)
            image[yard & ~taken] = np.array(PAVED) * rng.uniform(0.85, 1.15)
            taken |= ndimage.binary_dilation(yard, iterations=3)
        mask = np.zeros((size, size), bool)
        shadow = np.zeros((size, size), bool)
        for _ in range(rng.integers(3, 13)):
            for _try in range(20):  # a free place for the building
                h, w = rng.uniform(12, 48, 2)
                a = rng.choice(angles) + rng.normal(0, 0.04)
                foot, u = _rect(yy, xx, *rng.uniform(0, size, 2), h, w, a)
                if foot.any() and not (foot & taken).any():
                    break
            else:
                continue
            roof = ROOFS[rng.integers(len(ROOFS))] * rng.uniform(0.88, 1.12)
            colour = np.broadcast_to(roof, image.shape).copy()
            if rng.random() < 0.5:  # gabled: the half facing the sun is brighter
                colour[u > 0] *= 1.15
            image[foot] = np.clip(colour[foot], 0, 255)
            mask |= foot
            taken |= ndimage.binary_dilation(foot, iterations=3)
            shadow |= _cast(foot)
        image[shadow & ~mask] *= 0.55
        crowns = np.zeros((size, size), bool)
        for _ in range(rng.integers(5, 30)):  # trees, some over a building's edge
            r = rng.uniform(4, 10)
            cy, cx = rng.uniform(0, size, 2)
            crowns |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        tree_shadow = _cast(crowns) & ~crowns
        image[tree_shadow] *= 0.6
        leaf = 1 + 0.25 * ndimage.gaussian_filter(rng.normal(size=(size, size)), 1.2)
        image[crowns] = (np.array(TREE)[None] * leaf[crowns][:, None]).clip(0, 255)
        haze = rng.uniform(0, 40)  # atmosphere: lifts and flattens the tile
        image = image * (1 - haze / 255) + haze
        image = ndimage.gaussian_filter(image, (0.8, 0.8, 0)) + rng.normal(0, 4, image.shape)
        out.append((f"a{i:03d}", np.clip(image, 0, 255).astype(np.uint8), mask.astype(np.uint8)))
    return out
