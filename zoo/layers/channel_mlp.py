"""`ChannelMLP`: a two-layer GELU MLP over the channels of every position."""

from __future__ import annotations

import keras
from keras import ops

from zoo.build_context import is_exporting
from zoo.checks import check_positive_int


def exact_gelu(x):
    """``x * Phi(x)`` computed in float32 with `erf` (`zoo.layers.GELU`'s function)."""
    y = ops.cast(x, "float32")
    return ops.cast(0.5 * y * (1.0 + ops.erf(y * (2.0**-0.5))), x.dtype)


@keras.saving.register_keras_serializable(package="zoo")
class ChannelMLP(keras.layers.Layer):
    """``fc2(GELU(fc1(x)))`` on the last axis: a transformer / ConvNeXt feed-forward block.

    The same function as ``Dense(hidden_units)``, exact-GELU ``GELU()``, ``Dense(units)``,
    computed so that TensorFlow's graph optimizer can fuse the first layer's matrix product,
    bias and GELU into one oneDNN kernel when the model infers (on a CPU a separate GELU is an
    extra pass over the widest activation of the network: 4x its channels). Training computes
    the GELU in float32 with `erf` (faster to differentiate), as do exported models (ONNX has
    no `erfc`, which TensorFlow's own GELU uses); both GELUs are exact to float rounding.

    Args:
        hidden_units: width of the hidden layer (``fc1``).
        units: output width (``fc2``); None keeps the input's.
        **kwargs: base layer arguments.

    Example:

    ```python
    y = keras.layers.LayerNormalization(epsilon=1e-6)(x)
    y = ChannelMLP(4 * 96, name="block1_mlp")(y)  # (..., 96) -> (..., 384) -> (..., 96)
    ```

    Reference:
        Hendrycks and Gimpel, "Gaussian Error Linear Units (GELUs)", 2016.
    """

    def __init__(self, hidden_units: int, units: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.hidden_units = check_positive_int("hidden_units", hidden_units)
        self.units = None if units is None else check_positive_int("units", units)
        self.export_mode = is_exporting()  # not in the config

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(
                f"ChannelMLP {self.name!r} needs a known last axis. Received: "
                f"input_shape={tuple(input_shape)}"
            )
        out = self.units or int(channels)
        init = keras.initializers.GlorotUniform()
        self.fc1_kernel = self.add_weight(
            name="fc1_kernel", shape=(int(channels), self.hidden_units), initializer=init
        )
        self.fc1_bias = self.add_weight(
            name="fc1_bias", shape=(self.hidden_units,), initializer="zeros"
        )
        self.fc2_kernel = self.add_weight(
            name="fc2_kernel", shape=(self.hidden_units, out), initializer=init
        )
        self.fc2_bias = self.add_weight(name="fc2_bias", shape=(out,), initializer="zeros")

    def call(self, inputs, training=None):
        import tensorflow as tf  # the zoo runs on the TensorFlow backend

        dtype = inputs.dtype
        channels = int(inputs.shape[-1])
        # One matrix product over all positions: MatMul -> BiasAdd -> GELU is the pattern
        # TensorFlow's remapper fuses (Keras' Dense adds its bias with AddV2, which it does not).
        x = tf.reshape(inputs, [-1, channels])
        h = tf.nn.bias_add(
            tf.matmul(x, tf.cast(self.fc1_kernel, dtype)), tf.cast(self.fc1_bias, dtype)
        )
        if training or self.export_mode:
            h = exact_gelu(h)
        else:
            h = tf.nn.gelu(h, approximate=False)
        y = tf.nn.bias_add(
            tf.matmul(h, tf.cast(self.fc2_kernel, dtype)), tf.cast(self.fc2_bias, dtype)
        )
        out = int(self.fc2_kernel.shape[-1])
        return tf.reshape(y, tf.concat([tf.shape(inputs)[:-1], [out]], 0))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units or input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "hidden_units": self.hidden_units, "units": self.units}
