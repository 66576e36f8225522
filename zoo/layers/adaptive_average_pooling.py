"""`AdaptiveAveragePooling2D`: PyTorch's ``nn.AdaptiveAvgPool2d`` for unknown spatial sizes."""

from __future__ import annotations

from collections.abc import Sequence

import keras


def _pooling_matrix(size, bins: int, dtype):
    """``(bins, size)`` averaging matrix: bin `i` covers ``[floor(i*size/bins),
    ceil((i+1)*size/bins))``, PyTorch's adaptive pooling windows (they overlap when `size`
    is not a multiple of `bins`, and repeat pixels when `size` < `bins`)."""
    import tensorflow as tf

    i = tf.range(bins)
    start = (i * size) // bins
    end = ((i + 1) * size + bins - 1) // bins
    j = tf.range(size)
    inside = (j[None, :] >= start[:, None]) & (j[None, :] < end[:, None])
    return tf.cast(inside, dtype) / tf.cast(end - start, dtype)[:, None]


@keras.saving.register_keras_serializable(package="zoo")
class AdaptiveAveragePooling2D(keras.layers.Layer):
    """Average pooling to a fixed ``(out_h, out_w)`` grid, whatever the input size.

    Bin `i` of an axis of length `n` averages positions ``floor(i * n / out)`` to
    ``ceil((i + 1) * n / out) - 1``, exactly as PyTorch's ``nn.AdaptiveAvgPool2d`` (the
    pyramid pooling of PSPNet and UPerNet). Unlike ``keras.layers.AdaptiveAveragePooling2D``
    the input height and width may be unknown when the model is built: the pooling is two
    small matrix products with averaging matrices built at run time.

    Args:
        output_size: int or (height, width) of the pooled grid.

    Call arguments:
        inputs: ``(B, H, W, C)``.

    Returns:
        ``(B, out_h, out_w, C)``.

    Example:

    ```python
    y = AdaptiveAveragePooling2D(6)(keras.ops.ones((2, 13, 9, 4)))  # (2, 6, 6, 4)
    ```

    Reference:
        Zhao et al., "Pyramid Scene Parsing Network", CVPR 2017.
    """

    def __init__(self, output_size: int | Sequence[int], **kwargs):
        super().__init__(**kwargs)
        size = (output_size, output_size) if isinstance(output_size, int) else output_size
        ok = isinstance(size, (list, tuple)) and len(size) == 2
        ok = ok and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)
        if not ok:
            raise ValueError(
                "Invalid value for argument `output_size`: expected a positive integer or a "
                f"pair of them. Received: output_size={output_size!r}"
            )
        self.output_size = tuple(size)

    def call(self, inputs):
        import tensorflow as tf  # the zoo runs on the TensorFlow backend

        out_h, out_w = self.output_size
        if (out_h, out_w) == (1, 1):
            return tf.reduce_mean(inputs, axis=(1, 2), keepdims=True)
        # float32 averages: bins of 3 or 6 pixels have weights bfloat16 cannot hold.
        x = tf.cast(inputs, tf.float32)
        shape = tf.shape(x)
        b, h, w, c = shape[0], shape[1], shape[2], shape[3]
        rows = _pooling_matrix(h, out_h, tf.float32)  # (out_h, H)
        cols = _pooling_matrix(w, out_w, tf.float32)  # (out_w, W)
        # Two broadcast matrix products (BatchMatMul: every converter takes it, unlike
        # Einsum): rows over (B, H, W*C), then columns over (B*out_h, W, C).
        y = tf.matmul(rows, tf.reshape(x, [b, h, w * c]))
        y = tf.matmul(cols, tf.reshape(y, [b * out_h, w, c]))
        return tf.cast(tf.reshape(y, [b, out_h, out_w, c]), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.output_size, input_shape[3])

    def get_config(self):
        return {**super().get_config(), "output_size": list(self.output_size)}
