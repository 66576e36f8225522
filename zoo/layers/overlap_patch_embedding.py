"""`OverlapPatchEmbedding`: the strided convolution + layer norm opening each MiT stage."""

from __future__ import annotations

import keras
from keras import ops

from zoo.layers.efficient_self_attention import CONV_INIT


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"Invalid value for argument `{name}`: expected a positive integer. "
            f"Received: {name}={value!r}"
        )
    return value


@keras.saving.register_keras_serializable(package="zoo")
class OverlapPatchEmbedding(keras.layers.Layer):
    """Overlapping patch embedding: a strided convolution with symmetric zero padding, then
    layer normalization over the channels.

    The kernel is larger than the stride (7x7 / 4 for the first Mix Transformer stage, 3x3 / 2
    for the others), so neighbouring patches overlap. The padding is ``patch_size // 2`` on
    every side, as in the reference implementation: Keras' ``padding="same"`` would put the
    extra row at the bottom only and shift the sampling grid. With inputs divisible by the
    stride the output is ``(B, H / strides, W / strides, filters)``. Sublayers are named
    ``{name}_proj`` and ``{name}_norm``.

    Args:
        filters: embedding channels.
        patch_size: kernel size (odd).
        strides: stride of the convolution.
        epsilon: layer-norm epsilon.

    Example:

    ```python
    y = OverlapPatchEmbedding(32, patch_size=7, strides=4)(keras.ops.ones((1, 64, 64, 3)))
    # (1, 16, 16, 32)
    ```

    Reference:
        Xie et al., "SegFormer: Simple and Efficient Design for Semantic Segmentation with
        Transformers", NeurIPS 2021.
    """

    def __init__(
        self, filters: int, patch_size: int, strides: int, epsilon: float = 1e-5, **kwargs
    ):
        super().__init__(**kwargs)
        self.filters = _positive_int("filters", filters)
        self.patch_size = _positive_int("patch_size", patch_size)
        self.strides = _positive_int("strides", strides)
        if self.patch_size % 2 == 0:
            raise ValueError(
                "Invalid value for argument `patch_size`: expected an odd kernel size. "
                f"Received: patch_size={patch_size!r}"
            )
        self.epsilon = float(epsilon)
        self.proj = keras.layers.Conv2D(
            filters,
            patch_size,
            strides=strides,
            kernel_initializer=CONV_INIT,
            name=f"{self.name}_proj",
            dtype=self.dtype_policy,
        )
        self.norm = keras.layers.LayerNormalization(
            epsilon=epsilon, name=f"{self.name}_norm", dtype=self.dtype_policy
        )

    def build(self, input_shape):
        b, h, w, c = input_shape
        pad = self.patch_size - 1
        self.proj.build((b, None if h is None else h + pad, None if w is None else w + pad, c))
        self.norm.build(self.compute_output_shape(input_shape))
        self.built = True

    def call(self, inputs):
        p = self.patch_size // 2
        x = ops.pad(inputs, [[0, 0], [p, p], [p, p], [0, 0]])
        return self.norm(self.proj(x))

    def compute_output_shape(self, input_shape):
        b, h, w, _ = input_shape

        def out(size):
            p = self.patch_size // 2
            return None if size is None else (size + 2 * p - self.patch_size) // self.strides + 1

        return (b, out(h), out(w), self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "patch_size": self.patch_size,
            "strides": self.strides,
            "epsilon": self.epsilon,
        }
