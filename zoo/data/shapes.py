"""The built-in `shapes` dataset: procedurally generated, seeded, no download.

Each image shows several ellipses, rectangles, triangles and stars of various sizes, colors and
textures on a textured, noisy background. Objects are often placed next to an earlier object, so
they touch or overlap (later objects occlude earlier ones). Every image comes with an instance
mask; the binary mask (object vs background) and the class mask (background + shape kind) are
derived from it, as is the U-Net border weight map.

Image i of a split depends only on (seed, split, i), so sets of different sizes share a prefix.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

KINDS = ("ellipse", "rectangle", "triangle", "star")
CLASS_NAMES = ("background", *KINDS)
# data.mode=multilabel: "shape" (any object) and each kind; every object pixel has two labels.
LABEL_NAMES = ("shape", *KINDS)
_SPLITS = {"train": 0, "val": 1}


@dataclass
class ShapesArrays:
    """Stacked arrays of one split.

    Attributes:
        images: uint8 (N, H, W, 3).
        instances: int32 (N, H, W), 0 = background, 1.. = objects in painting order.
        classes: int32 (N, H, W), 0 = background, 1 + index in `KINDS` for objects.
    """

    images: np.ndarray
    instances: np.ndarray
    classes: np.ndarray

    def masks(self, num_classes: int) -> np.ndarray:
        """Binary (num_classes == 1) or class-id masks, int32 (N, H, W)."""
        if num_classes == 1:
            return (self.instances > 0).astype(np.int32)
        return self.classes

    def labels(self) -> np.ndarray:
        """Multilabel masks, uint8 (N, H, W, 5): `LABEL_NAMES`, "shape" overlapping each kind."""
        kinds = [self.classes == k for k in range(1, len(KINDS) + 1)]
        return np.stack([self.instances > 0, *kinds], -1).astype(np.uint8)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int, channels: int):
    """Bilinear upsampling of a coarse random grid: low-frequency texture in [0, 1]."""
    grid = rng.random((cells + 1, cells + 1, channels))
    ys = np.linspace(0, cells, h)
    xs = np.linspace(0, cells, w)
    y0 = np.minimum(ys.astype(int), cells - 1)
    x0 = np.minimum(xs.astype(int), cells - 1)
    fy = (ys - y0)[:, None, None]
    fx = (xs - x0)[None, :, None]
    g00 = grid[y0][:, x0]
    g01 = grid[y0][:, x0 + 1]
    g10 = grid[y0 + 1][:, x0]
    g11 = grid[y0 + 1][:, x0 + 1]
    return (g00 * (1 - fx) + g01 * fx) * (1 - fy) + (g10 * (1 - fx) + g11 * fx) * fy


def _shape_mask(
    kind: str,
    yy: np.ndarray,
    xx: np.ndarray,
    cy: float,
    cx: float,
    r: float,
    rng: np.random.Generator,
) -> np.ndarray:
    angle = rng.uniform(0, np.pi)
    c, s = np.cos(angle), np.sin(angle)
    u = (xx - cx) * c + (yy - cy) * s  # rotated coordinates
    v = -(xx - cx) * s + (yy - cy) * c
    if kind == "ellipse":
        a, b = r, r * rng.uniform(0.5, 1.0)
        return (u / a) ** 2 + (v / b) ** 2 <= 1.0
    if kind == "rectangle":
        a, b = r * 0.9, r * rng.uniform(0.45, 0.9)
        return (np.abs(u) <= a) & (np.abs(v) <= b)
    theta = np.arctan2(v, u)
    rho = np.hypot(u, v)
    if kind == "triangle":
        # Inside a regular triangle: the polar distance to each edge's supporting line.
        k = 3
        sector = np.mod(theta, 2 * np.pi / k) - np.pi / k
        return rho * np.cos(sector) <= r * 0.6
    # star: radius alternates between outer and inner vertices, linear in angle
    k = int(rng.integers(5, 7))
    inner = rng.uniform(0.45, 0.6)
    phase = np.abs(np.mod(theta * k / (2 * np.pi), 1.0) - 0.5) * 2  # 1 at tips, 0 between
    return rho <= r * (inner + (1 - inner) * phase)


def _texture(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """A (H, W) pattern in [-1, 1]: flat, stripes, checker or blotches."""
    kind = rng.integers(4)
    if kind == 0:
        return np.zeros_like(yy)
    if kind == 1:
        a = rng.uniform(0, np.pi)
        f = rng.uniform(0.3, 0.8)
        return np.sin((xx * np.cos(a) + yy * np.sin(a)) * f)
    if kind == 2:
        p = rng.uniform(3, 7)
        return np.where((np.floor(xx / p) + np.floor(yy / p)) % 2 == 0, 1.0, -1.0)
    return rng.uniform(-1, 1, yy.shape)


def generate_image(
    rng: np.random.Generator,
    size: tuple[int, int],
    min_objects: int = 3,
    max_objects: int = 7,
    noise: float = 0.04,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One sample: (uint8 image (H, W, 3), int32 instances (H, W), int32 classes (H, W))."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    # Background: muted low-frequency color field, a second finer texture and a gradient.
    base = rng.uniform(0.25, 0.55)
    bg = base + 0.25 * (_smooth_noise(rng, h, w, int(rng.integers(2, 5)), 3) - 0.5)
    bg += 0.12 * (_smooth_noise(rng, h, w, int(rng.integers(8, 16)), 1) - 0.5)
    g = rng.normal(size=2) * 0.1
    bg += (g[0] * (yy / h - 0.5) + g[1] * (xx / w - 0.5))[..., None]
    image = bg.astype(np.float32)
    instances = np.zeros((h, w), np.int32)
    classes = np.zeros((h, w), np.int32)
    side = min(h, w)
    centers: list[tuple[float, float, float]] = []
    n = int(rng.integers(min_objects, max_objects + 1))
    for i in range(1, n + 1):
        kind = int(rng.integers(len(KINDS)))
        r = side * rng.uniform(0.08, 0.2)
        if centers and rng.random() < 0.6:
            # Next to an earlier object: touching or overlapping.
            py, px, pr = centers[int(rng.integers(len(centers)))]
            a = rng.uniform(0, 2 * np.pi)
            dist = (pr + r) * rng.uniform(0.6, 1.0)
            cy, cx = py + dist * np.sin(a), px + dist * np.cos(a)
        else:
            cy, cx = rng.uniform(0.1, 0.9) * h, rng.uniform(0.1, 0.9) * w
        # Work in the object's bounding window only (every kind fits in 1.3 r).
        y0, y1 = max(int(cy - 1.3 * r), 0), min(int(cy + 1.3 * r) + 2, h)
        x0, x1 = max(int(cx - 1.3 * r), 0), min(int(cx + 1.3 * r) + 2, w)
        if y1 - y0 < 3 or x1 - x0 < 3:
            continue
        win = (slice(y0, y1), slice(x0, x1))
        inside = _shape_mask(KINDS[kind], yy[win], xx[win], cy, cx, r, rng)
        if inside.sum() < 6:
            continue
        centers.append((cy, cx, r))
        # Saturated color well away from the background's gray level.
        color = rng.uniform(0.0, 0.35, 3)
        color[rng.integers(3)] = rng.uniform(0.75, 1.0)
        if rng.random() < 0.3:
            color = 1.0 - color
        shade = color[None, None, :] + 0.12 * _texture(rng, yy[win], xx[win])[..., None]
        image[win][inside] = shade[inside]
        instances[win][inside] = i
        classes[win][inside] = kind + 1
    image += rng.normal(0, noise, image.shape).astype(np.float32)
    image = np.clip(np.round(image * 255), 0, 255).astype(np.uint8)
    # Renumber instances 1..K (occluded objects may have vanished).
    ids = np.unique(instances)
    lut = np.zeros(ids.max() + 1, np.int32)
    lut[ids] = np.arange(len(ids))
    return image, lut[instances], classes


def _cache_path(params: dict) -> Path:
    key = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    root = Path(os.environ.get("ZOO_CACHE_DIR", Path.home() / ".cache" / "segzoo"))
    return root / f"shapes-{key}.npz"


_MEMORY: dict[str, ShapesArrays] = {}


def generate_shapes(
    num: int,
    image_size: tuple[int, int] | list[int] = (96, 96),
    seed: int = 0,
    split: str = "train",
    min_objects: int = 3,
    max_objects: int = 7,
    noise: float = 0.04,
    cache: bool = False,
) -> ShapesArrays:
    """Generate (or fetch from cache) `num` samples of one split.

    Args:
        num: number of images.
        image_size: (height, width).
        seed: dataset seed; image i depends only on (seed, split, i).
        split: "train" or "val" (independent streams).
        min_objects: fewest objects painted per image.
        max_objects: most objects painted per image.
        noise: standard deviation of the additive Gaussian pixel noise.
        cache: also keep the arrays on disk under ~/.cache/segzoo (or $ZOO_CACHE_DIR).

    Returns:
        `ShapesArrays` with stacked images, instance and class masks.

    Example:
        >>> data = generate_shapes(4, (64, 64), seed=1)
        >>> data.images.shape, data.masks(num_classes=1).max()
        ((4, 64, 64, 3), 1)
    """
    if split not in _SPLITS:
        raise ValueError(f"Invalid split={split!r}; choose one of: {', '.join(_SPLITS)}")
    h, w = (int(s) for s in image_size)
    params = dict(
        num=int(num),
        size=[h, w],
        seed=int(seed),
        split=split,
        min_objects=min_objects,
        max_objects=max_objects,
        noise=float(noise),
        version=2,
    )
    key = json.dumps(params, sort_keys=True)
    if key in _MEMORY:
        return _MEMORY[key]
    path = _cache_path(params)
    if cache and path.exists():
        try:
            with np.load(path) as z:
                out = ShapesArrays(
                    z["images"], z["instances"].astype(np.int32), z["classes"].astype(np.int32)
                )
            _MEMORY[key] = out
            return out
        except (OSError, ValueError, KeyError):
            pass  # a broken cache file is regenerated below
    images = np.empty((num, h, w, 3), np.uint8)
    instances = np.empty((num, h, w), np.int32)
    classes = np.empty((num, h, w), np.int32)
    for i in range(num):
        rng = np.random.default_rng([int(seed), _SPLITS[split], i])
        images[i], instances[i], classes[i] = generate_image(
            rng, (h, w), min_objects, max_objects, noise
        )
    out = ShapesArrays(images, instances, classes)
    _MEMORY[key] = out
    if cache:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.npz")
            small = np.uint8 if max_objects < 256 else np.int32  # 4x smaller files
            np.savez(
                tmp, images=images, instances=instances.astype(small), classes=classes.astype(small)
            )
            os.replace(tmp, path)
        except OSError:
            pass  # caching is an optimization only
    return out
