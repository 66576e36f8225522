"""`ClassToken`: a patch grid flattened to tokens behind a learned class token."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="zoo")
class ClassToken(keras.layers.Layer):
    """Flattens a ``(batch, h, w, channels)`` patch grid to ``h * w`` tokens (row by row) and
    puts one learned class token in front: ``(batch, 1 + h * w, channels)``.

    The class token (variable ``cls_token``, shape ``(1, 1, channels)``, initialized with a
    small normal as in timm) is the same for every image; a vision transformer's attention
    lets it gather a summary of the image.

    Args:
        **kwargs: base layer arguments (`name`, `dtype`).

    Example:

    ```python
    grid = keras.layers.Conv2D(192, 16, strides=16)(image)  # patch embedding
    tokens = ClassToken(name="encoder_cls_token")(grid)  # (batch, 1 + h * w, 192)
    ```

    Reference:
        Dosovitskiy et al., "An Image is Worth 16x16 Words: Transformers for Image
        Recognition at Scale", ICLR 2021.
    """

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[-1] is None:
            raise ValueError(
                "ClassToken expects a (batch, height, width, channels) grid with known "
                f"channels. Received: input_shape={input_shape}"
            )
        self.cls_token = self.add_weight(
            shape=(1, 1, int(input_shape[-1])),
            initializer=keras.initializers.RandomNormal(stddev=1e-6),
            name="cls_token",
        )

    def call(self, inputs):
        shape = ops.shape(inputs)
        tokens = ops.reshape(inputs, (shape[0], -1, shape[3]))
        cls = ops.broadcast_to(ops.cast(self.cls_token, tokens.dtype), (shape[0], 1, shape[3]))
        return ops.concatenate([cls, tokens], axis=1)

    def compute_output_shape(self, input_shape):
        batch, h, w, c = input_shape
        n = None if h is None or w is None else 1 + h * w
        return (batch, n, c)
