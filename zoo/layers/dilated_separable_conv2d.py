"""`DilatedSeparableConv2D`: a 'same'-padded dilated `SeparableConv2D` without the depthwise
taps that can only read padding."""

from __future__ import annotations

import keras

from zoo.build_context import is_exporting
from zoo.layers.dilated_conv2d import pruned_taps


@keras.saving.register_keras_serializable(package="zoo")
class DilatedSeparableConv2D(keras.layers.SeparableConv2D):
    """`keras.layers.SeparableConv2D` whose dilated depthwise kernel loses the rows / columns
    that can only read padding (`zoo.layers.dilated_conv2d.pruned_taps`): e.g. DeepLabV3+'s
    rate-24 and rate-36 branches on a 16x16 map are a per-channel scale followed by the
    pointwise conv. Same weights, outputs and gradients as `SeparableConv2D`; anything but
    stride 1, 'same' padding, channels-last and depth multiplier 1 takes its path, and so does
    the export copy (`export_mode`, as `DilatedConv2D`'s) when the input size is unknown: it
    prunes only a static size (LiteRT's fixed input), since a run-time branch does not
    convert.

    Args:
        As `keras.layers.SeparableConv2D`.

    Example:

    ```python
    conv = DilatedSeparableConv2D(256, 3, padding="same", dilation_rate=24, use_bias=False)
    y = conv(keras.ops.ones((2, 16, 16, 512)))  # (2, 16, 16, 256)
    ```

    Reference:
        Chen et al., "Encoder-Decoder with Atrous Separable Convolution for Semantic Image
        Segmentation" (DeepLabV3+), ECCV 2018.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.export_mode = is_exporting()  # not in the config

    def call(self, inputs):
        # The export copy prunes only a static size (a run-time branch does not convert).
        static = inputs.shape[1] is not None and inputs.shape[2] is not None
        fast = (
            (static or not self.export_mode)
            and keras.backend.backend() == "tensorflow"
            and self.padding == "same"
            and tuple(self.strides) == (1, 1)
            and self.data_format == "channels_last"
            and self.depth_multiplier == 1
            and tuple(self.dilation_rate) != (1, 1)
        )
        if not fast:
            return super().call(inputs)
        import tensorflow as tf

        pointwise = tf.convert_to_tensor(self.pointwise_kernel)

        def conv(x, depthwise, rate):
            return tf.nn.separable_conv2d(
                x, depthwise, pointwise, [1, 1, 1, 1], "SAME", dilations=rate
            )

        depthwise = tf.convert_to_tensor(self.depthwise_kernel)
        outputs = pruned_taps(inputs, depthwise, self.dilation_rate, conv)
        if self.use_bias:
            outputs = outputs + self.bias
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs
