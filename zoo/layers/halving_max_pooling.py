"""`HalvingMaxPooling2D`: 2x2 / 2 max pooling that never shrinks an axis to nothing."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="zoo")
class HalvingMaxPooling2D(keras.layers.Layer):
    """2x2 max pooling with stride 2 in floor mode, except that an axis of length 1 stays 1.

    An axis of length `n` becomes ``max(1, n // 2)``: for ``n >= 2`` exactly
    ``MaxPooling2D(2, padding="valid")`` (PyTorch's ``MaxPool2d(2, 2)``: an odd last row or
    column is dropped); a 1-pixel axis, where those give an empty map, is passed through (the
    max over its only pixel). PAN's feature pyramid attention pools its stride-16/32 map
    three times: with this rule it runs on every input size and equals the floor-mode
    pyramid wherever that is defined (the map at least 8 pixels on each side).

    Call arguments:
        inputs: ``(B, H, W, C)``.

    Returns:
        ``(B, max(1, H // 2), max(1, W // 2), C)``.

    Example:

    ```python
    y = HalvingMaxPooling2D()(keras.ops.ones((1, 5, 1, 3)))  # (1, 2, 1, 3)
    ```

    Reference:
        Li et al., "Pyramid Attention Network for Semantic Segmentation", BMVC 2018.
    """

    def call(self, inputs):
        import tensorflow as tf  # the zoo runs on the TensorFlow backend

        # "SAME" gives ceil(n / 2) windows whose first n // 2 are the floor-mode ones
        # (the padding sits after the last pixel); keep max(1, n // 2) of them.
        y = tf.nn.max_pool2d(inputs, 2, 2, "SAME")
        shape = tf.shape(inputs)
        h = tf.maximum(shape[1] // 2, 1)
        w = tf.maximum(shape[2] // 2, 1)
        return y[:, :h, :w, :]

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        return (b, None if h is None else max(1, h // 2), None if w is None else max(1, w // 2), c)
