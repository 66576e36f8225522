"""`BilinearUpsampling`: the zoo's one bilinear upsampling layer (PyTorch's corner choice,
any input size, exportable)."""

from __future__ import annotations

from collections.abc import Sequence

import keras


@keras.saving.register_keras_serializable(package="zoo")
class BilinearUpsampling(keras.layers.Layer):
    """Bilinear upsampling by integer factors, with ``align_corners`` as in PyTorch.

    ``align_corners=False`` is `keras.layers.UpSampling2D(interpolation="bilinear")` (half-pixel
    centres, PyTorch's ``align_corners=False``). ``align_corners=True`` maps the corner pixels
    of input and output onto each other (output pixel ``i`` samples input position
    ``i * (in - 1) / (out - 1)``), what ``F.interpolate(..., align_corners=True)`` does in
    segmentation_models_pytorch's FPN and segmentation heads; ported weights need it to give
    the same logits.

    Unlike Keras' layer it traces and exports with unknown (``None``) height and width (Keras
    3.15 tests ``size[0] <= 0`` on a symbolic size), and known sizes stay constants in the
    graph (what LiteRT's XNNPack delegate needs to take the resize). It computes in float32
    unless given another `dtype`: TF 2.21's XLA rejects the gradient of a bfloat16 bilinear
    resize, and under a mixed policy the next layer casts the result back.

    Args:
        size: upsampling factor, an int or ``(rows, cols)``.
        align_corners: the sampling grid, as above.
        **kwargs: `keras.layers.Layer` arguments (`name`, `dtype`).

    Example:

    ```python
    y = BilinearUpsampling(4, align_corners=True)(keras.ops.ones((1, 16, 16, 2)))  # (1, 64, 64, 2)
    ```
    """

    def __init__(self, size: int | Sequence[int] = 2, align_corners: bool = False, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        factors = (size, size) if isinstance(size, int) and not isinstance(size, bool) else size
        ok = isinstance(factors, list | tuple) and len(factors) == 2
        if not ok or any(isinstance(f, bool) or not isinstance(f, int) or f < 1 for f in factors):
            raise ValueError(
                "Invalid value for argument `size`: expected a positive int or a pair of "
                f"positive ints. Received: size={size!r}"
            )
        if not isinstance(align_corners, bool):
            raise ValueError(
                "Invalid value for argument `align_corners`: expected True or False. "
                f"Received: align_corners={align_corners!r}"
            )
        self.size = tuple(factors)
        self.align_corners = align_corners

    def call(self, inputs):
        import tensorflow as tf  # the zoo runs on the TensorFlow backend

        if self.size == (1, 1):
            return tf.cast(inputs, self.compute_dtype)
        dynamic = tf.shape(inputs)
        new_size = [
            inputs.shape[axis] * f if inputs.shape[axis] is not None else dynamic[axis] * f
            for axis, f in zip((1, 2), self.size)
        ]
        if all(isinstance(d, int) for d in new_size):
            new_size = tf.constant(new_size, tf.int32)
        else:
            new_size = tf.stack(new_size)
        out = tf.raw_ops.ResizeBilinear(
            images=inputs,
            size=new_size,
            align_corners=self.align_corners,
            half_pixel_centers=not self.align_corners,
        )
        return tf.cast(out, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        rows, cols = self.size
        return (b, None if h is None else h * rows, None if w is None else w * cols, c)

    def get_config(self):
        return {
            **super().get_config(),
            "size": list(self.size),
            "align_corners": self.align_corners,
        }
