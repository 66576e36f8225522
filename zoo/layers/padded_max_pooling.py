"""`PaddedMaxPooling2D`: max pooling padded as PyTorch's ``MaxPool2d(k, s, padding)``."""

from __future__ import annotations

import keras

from zoo.checks import check_positive_int


@keras.saving.register_keras_serializable(package="zoo")
class PaddedMaxPooling2D(keras.layers.Layer):
    """Max pooling after `padding` pixels of -inf on every side (PyTorch's padded max-pool).

    TensorFlow's "same" pooling pads only after the last pixel when the padding is odd, so its
    windows sit one pixel off PyTorch's; zero padding is right only after a ReLU. This layer
    pads symmetrically with -inf (never the maximum), then pools "valid": ``floor((n + 2p -
    k) / s) + 1`` windows per axis, the ones PyTorch's ``MaxPool2d(k, s, p)`` takes (floor
    mode), whatever the sign of the inputs (e.g. Xception's pools after a batch norm).

    Args:
        pool_size: window size (int).
        strides: step between windows (int).
        padding: pixels added before the first and after the last row and column; at most
            ``pool_size // 2``, so that every window sees an input pixel.

    Call arguments:
        inputs: ``(B, H, W, C)``.

    Example:

    ```python
    y = PaddedMaxPooling2D(3, 2, 1)(keras.ops.ones((1, 8, 8, 4)))  # (1, 4, 4, 4)
    ```
    """

    def __init__(self, pool_size: int, strides: int, padding: int, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = check_positive_int("pool_size", pool_size)
        self.strides = check_positive_int("strides", strides)
        if (
            not isinstance(padding, int)
            or isinstance(padding, bool)
            or not (0 <= padding <= self.pool_size // 2)
        ):
            raise ValueError(
                "Invalid value for argument `padding`: expected an integer from 0 to "
                f"pool_size // 2 = {self.pool_size // 2}. Received: padding={padding!r}"
            )
        self.padding = padding

    def call(self, inputs):
        p = self.padding
        if p:
            inputs = keras.ops.pad(
                inputs, [[0, 0], [p, p], [p, p], [0, 0]], constant_values=float("-inf")
            )
        return keras.ops.max_pool(inputs, self.pool_size, self.strides, padding="valid")

    def compute_output_shape(self, input_shape):
        def out(n):
            return (
                None if n is None else (n + 2 * self.padding - self.pool_size) // self.strides + 1
            )

        b, h, w, c = input_shape
        return (b, out(h), out(w), c)

    def get_config(self):
        config = super().get_config()
        config.update(pool_size=self.pool_size, strides=self.strides, padding=self.padding)
        return config
