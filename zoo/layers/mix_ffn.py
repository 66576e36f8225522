"""`MixFFN`: the Mix Transformer's feed-forward block with a depthwise 3x3 convolution."""

from __future__ import annotations

import keras
from keras import ops

from zoo.build_context import is_exporting
from zoo.layers.efficient_self_attention import CONV_INIT, DENSE_INIT


@keras.saving.register_keras_serializable(package="zoo")
class MixFFN(keras.layers.Layer):
    """Mix-FFN on a ``(B, H, W, C)`` map: dense to `hidden_units`, depthwise 3x3 convolution
    (with bias), GELU (exact, erf form), dense back to ``C``. Sublayers are named
    ``{name}_fc1``, ``{name}_dwconv`` and ``{name}_fc2``. Created inside
    `zoo.build_context.exporting()` the GELU is written ``x (1 + erf(x / sqrt 2)) / 2``: the
    same function, while TensorFlow's own form uses `erfc`, which ONNX has no op for.

    The depthwise convolution leaks positional information between neighbouring tokens, which
    is why the Mix Transformer needs no position embeddings and works at any input size.

    Args:
        hidden_units: width of the hidden layer (4x the channels in MiT).

    Example:

    ```python
    y = MixFFN(128)(keras.ops.ones((1, 16, 16, 32)))  # (1, 16, 16, 32)
    ```

    Reference:
        Xie et al., "SegFormer: Simple and Efficient Design for Semantic Segmentation with
        Transformers", NeurIPS 2021.
    """

    def __init__(self, hidden_units: int, **kwargs):
        super().__init__(**kwargs)
        if isinstance(hidden_units, bool) or not isinstance(hidden_units, int) or hidden_units < 1:
            raise ValueError(
                "Invalid value for argument `hidden_units`: expected a positive integer. "
                f"Received: hidden_units={hidden_units!r}"
            )
        self.hidden_units = hidden_units
        self.export_mode = is_exporting()

    def build(self, input_shape):
        policy = self.dtype_policy
        dense = {"kernel_initializer": DENSE_INIT, "dtype": policy}
        self.fc1 = keras.layers.Dense(self.hidden_units, name=f"{self.name}_fc1", **dense)
        self.dwconv = keras.layers.DepthwiseConv2D(
            3,
            padding="same",
            depthwise_initializer=CONV_INIT,
            name=f"{self.name}_dwconv",
            dtype=policy,
        )
        self.fc2 = keras.layers.Dense(input_shape[-1], name=f"{self.name}_fc2", **dense)
        self.fc1.build(input_shape)
        hidden_shape = (*input_shape[:-1], self.hidden_units)
        self.dwconv.build(hidden_shape)
        self.fc2.build(hidden_shape)
        self.built = True

    def call(self, inputs):
        x = self.dwconv(self.fc1(inputs))
        if self.export_mode:
            x = 0.5 * x * (1.0 + ops.erf(x * (2.0**-0.5)))
        else:
            x = ops.gelu(x, approximate=False)
        return self.fc2(x)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "hidden_units": self.hidden_units}
