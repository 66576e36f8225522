"""`BilinearUpsampling`: integer-factor bilinear upsampling with PyTorch's corner choice."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="zoo")
class BilinearUpsampling(keras.layers.Layer):
    """Bilinear upsampling by an integer factor, with ``align_corners`` as in PyTorch.

    ``align_corners=False`` is `keras.layers.UpSampling2D(interpolation="bilinear")` (half-pixel
    centres, PyTorch's ``align_corners=False``). ``align_corners=True`` maps the corner pixels
    of input and output onto each other (output pixel ``i`` samples input position
    ``i * (in - 1) / (out - 1)``), which is what ``nn.UpsamplingBilinear2d`` /
    ``F.interpolate(..., align_corners=True)`` do in segmentation_models_pytorch's FPN and
    segmentation heads; ported weights need it to give the same logits.
    Computes in float32 (TF 2.21's XLA rejects bfloat16 bilinear-resize gradients); the
    layer's default dtype is float32.

    Args:
        size: integer upsampling factor for height and width.
        align_corners: the sampling grid, as above.

    Example:

    ```python
    y = BilinearUpsampling(4, align_corners=True)(keras.ops.ones((1, 16, 16, 2)))  # (1, 64, 64, 2)
    ```
    """

    def __init__(self, size: int, align_corners: bool = False, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(
                "Invalid value for argument `size`: expected a positive integer. "
                f"Received: size={size!r}"
            )
        if not isinstance(align_corners, bool):
            raise ValueError(
                "Invalid value for argument `align_corners`: expected True or False. "
                f"Received: align_corners={align_corners!r}"
            )
        self.size = size
        self.align_corners = align_corners

    def call(self, inputs):
        import tensorflow as tf  # the zoo runs on the TensorFlow backend

        if self.size == 1:
            return inputs
        shape = tf.shape(inputs)
        new_size = tf.stack([shape[1] * self.size, shape[2] * self.size])
        out = tf.raw_ops.ResizeBilinear(
            images=inputs,
            size=new_size,
            align_corners=self.align_corners,
            half_pixel_centers=not self.align_corners,
        )
        return tf.cast(out, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        return (
            b,
            None if h is None else h * self.size,
            None if w is None else w * self.size,
            c,
        )

    def get_config(self):
        return {**super().get_config(), "size": self.size, "align_corners": self.align_corners}
