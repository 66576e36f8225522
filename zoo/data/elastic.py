"""Geometric warps of image, weight and mask: elastic deformation and rotation by any angle.

Elastic deformation is the original U-Net paper's augmentation for training from a few
microscopy images: random displacements on a coarse grid (a few control points per side,
Gaussian with a standard deviation of some pixels), interpolated bicubically to one
displacement per pixel. Both warps resample the image bilinearly and the label mask by nearest
neighbour so it keeps its class values; points from outside the image are reflected back in
at the border.

Reference:
    Ronneberger, Fischer and Brox, "U-Net: Convolutional Networks for Biomedical Image
    Segmentation", MICCAI 2015, section 3.1.
"""

from __future__ import annotations

import tensorflow as tf


def displacement_field(
    key: tf.Tensor, height: tf.Tensor, width: tf.Tensor, std: float, grid: int
) -> tf.Tensor:
    """A smooth (height, width, 2) field of (dy, dx) displacements in pixels.

    Args:
        key: int64 (2,) stateless seed.
        height, width: the field's size.
        std: the standard deviation in pixels of the displacements at the control points.
        grid: control points per side (the U-Net paper: 3).
    """
    coarse = tf.random.stateless_normal([1, grid, grid, 2], seed=key) * std
    return tf.image.resize(coarse, tf.stack([height, width]), method="bicubic")[0]


def _reflect(coord: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
    """Fold coordinates into [0, size - 1] by mirroring at the borders (period 2 (size - 1))."""
    last = tf.maximum(tf.cast(size, tf.float32) - 1.0, 1e-6)
    folded = tf.math.floormod(coord, 2.0 * last)
    return tf.where(folded > last, 2.0 * last - folded, folded)


def warp(x: tf.Tensor, field: tf.Tensor, interpolation: str) -> tf.Tensor:
    """Resample an (h, w, C) tensor at (y + dy, x + dx) for each output pixel (y, x).

    Args:
        x: the tensor to deform.
        field: (h, w, 2) displacements (dy, dx) in pixels, e.g. from `displacement_field`.
        interpolation: "BILINEAR" (images, weight maps) or "NEAREST" (label masks).
    """
    if interpolation not in ("BILINEAR", "NEAREST"):
        raise ValueError(
            "Invalid value for argument `interpolation`: expected 'BILINEAR' or 'NEAREST'. "
            f"Received: interpolation={interpolation!r}"
        )
    shape = tf.shape(x)
    h, w = shape[0], shape[1]
    yy, xx = tf.meshgrid(
        tf.range(h, dtype=tf.float32), tf.range(w, dtype=tf.float32), indexing="ij"
    )
    sy = _reflect(yy + field[..., 0], h)
    sx = _reflect(xx + field[..., 1], w)
    values = tf.cast(x, tf.float32)
    if interpolation == "NEAREST":
        idx = tf.stack([tf.cast(tf.round(sy), tf.int32), tf.cast(tf.round(sx), tf.int32)], -1)
        return tf.cast(tf.gather_nd(values, idx), x.dtype)
    y0 = tf.floor(sy)
    x0 = tf.floor(sx)
    fy = (sy - y0)[..., None]
    fx = (sx - x0)[..., None]
    y0 = tf.cast(y0, tf.int32)
    x0 = tf.cast(x0, tf.int32)
    y1 = tf.minimum(y0 + 1, h - 1)
    x1 = tf.minimum(x0 + 1, w - 1)

    def at(yi: tf.Tensor, xi: tf.Tensor) -> tf.Tensor:
        return tf.gather_nd(values, tf.stack([yi, xi], -1))

    top = at(y0, x0) * (1.0 - fx) + at(y0, x1) * fx
    bottom = at(y1, x0) * (1.0 - fx) + at(y1, x1) * fx
    return tf.cast(top * (1.0 - fy) + bottom * fy, x.dtype)


def rotate(x: tf.Tensor, angle: tf.Tensor, interpolation: str) -> tf.Tensor:
    """Rotate an (h, w, C) tensor by `angle` radians (counter-clockwise on screen) about its
    centre; pixels from outside are filled by reflecting the image at its border.

    `interpolation` is "BILINEAR" (images, weight maps) or "NEAREST" (label masks, which must
    keep their class values).
    """
    h = tf.cast(tf.shape(x)[0], tf.float32)
    w = tf.cast(tf.shape(x)[1], tf.float32)
    cy, cx = (h - 1.0) / 2.0, (w - 1.0) / 2.0
    c, s = tf.cos(angle), tf.sin(angle)
    # The transform maps each output pixel (x, y) to the input point it samples: rows
    # [a0, a1, a2] (x) and [b0, b1, b2] (y); a turn by -angle in image coordinates (y down).
    transform = tf.stack([c, -s, cx - c * cx + s * cy, s, c, cy - s * cx - c * cy, 0.0, 0.0])[None]
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(x, tf.float32)[None],
        transforms=transform,
        output_shape=tf.shape(x)[:2],
        fill_value=0.0,
        interpolation=interpolation,
        fill_mode="REFLECT",
    )
    return tf.cast(out[0], x.dtype)
