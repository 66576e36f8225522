"""`BilinearUpsampling`: the zoo's one bilinear resize layer (PyTorch's corner choice, integer
factors or a reference tensor's size, any input size, exportable)."""

from __future__ import annotations

from collections.abc import Sequence

import keras


@keras.saving.register_keras_serializable(package="zoo")
class BilinearUpsampling(keras.layers.Layer):
    """Bilinear resize by integer factors or to a reference's size, with PyTorch's
    ``align_corners``.

    ``align_corners=False`` is `keras.layers.UpSampling2D(interpolation="bilinear")` (half-pixel
    centres: source coordinate ``(dst + 0.5) * in / out - 0.5``, PyTorch's
    ``align_corners=False``). ``align_corners=True`` maps the corner pixels of input and output
    onto each other (output pixel ``i`` samples input position ``i * (in - 1) / (out - 1)``),
    what ``F.interpolate(..., align_corners=True)`` does in most segmentation_models_pytorch
    heads; ported weights need it to give the same logits.

    With ``size=None`` the layer is called on ``[x, reference]`` and resizes `x` to the height
    and width of `reference`, whatever the ratio (also down, and by non-integer factors), as
    ``F.interpolate(x, size=reference.shape[-2:])`` does: the pyramid pooling of PSPNet and
    UPerNet brings 2x2 ... 6x6 grids back to the map's size, PAN's pyramid merges maps of odd
    sizes. Like PyTorch's (without ``antialias``) it samples, it does not average, when it
    shrinks.

    Unlike Keras' layer it traces and exports with unknown (``None``) height and width (Keras
    3.15 tests ``size[0] <= 0`` on a symbolic size), and known sizes stay constants in the
    graph (what LiteRT's XNNPack delegate needs to take the resize). It computes in float32
    unless given another `dtype`: TF 2.21's XLA rejects the gradient of a bfloat16 bilinear
    resize, and under a mixed policy the next layer casts the result back.

    Args:
        size: upsampling factor, an int or ``(rows, cols)``; None to resize to a reference's
            size.
        align_corners: the sampling grid, as above.
        **kwargs: `keras.layers.Layer` arguments (`name`, `dtype`).

    Call arguments:
        inputs: a tensor ``(B, H, W, C)`` (with `size`), or a list ``[x, reference]`` (with
            ``size=None``; only the reference's height and width are used).

    Example:

    ```python
    y = BilinearUpsampling(4, align_corners=True)(keras.ops.ones((1, 16, 16, 2)))  # (1, 64, 64, 2)
    z = BilinearUpsampling(None)([keras.ops.ones((1, 6, 6, 2)), keras.ops.ones((1, 9, 7, 8))])
    # z: (1, 9, 7, 2)
    ```
    """

    def __init__(self, size: int | Sequence[int] | None = 2, align_corners: bool = False, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        factors = (size, size) if isinstance(size, int) and not isinstance(size, bool) else size
        ok = size is None or (
            isinstance(factors, list | tuple)
            and len(factors) == 2
            and all(not isinstance(f, bool) and isinstance(f, int) and f >= 1 for f in factors)
        )
        if not ok:
            raise ValueError(
                "Invalid value for argument `size`: expected a positive int, a pair of "
                f"positive ints, or None (the reference's size). Received: size={size!r}"
            )
        if not isinstance(align_corners, bool):
            raise ValueError(
                "Invalid value for argument `align_corners`: expected True or False. "
                f"Received: align_corners={align_corners!r}"
            )
        self.size = None if size is None else tuple(factors)
        self.align_corners = align_corners

    def _split(self, inputs):
        paired = isinstance(inputs, (list, tuple))
        if paired != (self.size is None) or (paired and len(inputs) != 2):
            raise ValueError(
                "BilinearUpsampling takes one tensor when `size` is set and a list "
                f"[x, reference] when it is None. Received size={self.size!r} and "
                f"{f'a list of {len(inputs)}' if paired else 'one tensor'}."
            )
        return (inputs[0], inputs[1]) if paired else (inputs, None)

    def call(self, inputs):
        import tensorflow as tf  # the zoo runs on the TensorFlow backend

        x, reference = self._split(inputs)
        if reference is None:
            if self.size == (1, 1):
                return tf.cast(x, self.compute_dtype)
            source, factors = x, self.size
        else:
            source, factors = reference, (1, 1)
            if None not in x.shape[1:3] and tuple(x.shape[1:3]) == tuple(source.shape[1:3]):
                # Already the reference's size (known when built): the resize is the identity
                # (LiteRT's XNNPack delegate rejects a quantized 1x1 -> 1x1 corner-aligned one).
                return tf.cast(x, self.compute_dtype)
        dynamic = tf.shape(source)
        new_size = [
            source.shape[axis] * f if source.shape[axis] is not None else dynamic[axis] * f
            for axis, f in zip((1, 2), factors)
        ]
        if all(isinstance(d, int) for d in new_size):
            new_size = tf.constant(new_size, tf.int32)
        else:
            new_size = tf.stack(new_size)
        out = tf.raw_ops.ResizeBilinear(
            images=x,
            size=new_size,
            align_corners=self.align_corners,
            half_pixel_centers=not self.align_corners,
        )
        return tf.cast(out, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        if self.size is None:
            (b, _, _, c), (_, h, w, _) = input_shape
            return (b, h, w, c)
        b, h, w, c = input_shape
        rows, cols = self.size
        return (b, None if h is None else h * rows, None if w is None else w * cols, c)

    def get_config(self):
        return {
            **super().get_config(),
            "size": None if self.size is None else list(self.size),
            "align_corners": self.align_corners,
        }
