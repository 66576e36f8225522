"""`GroupedConv2D`: a grouped convolution (ResNeXt) that trains at full speed on CPU."""

from __future__ import annotations

import keras

from zoo.layers.dilated_conv2d import direct_dilation


@keras.saving.register_keras_serializable(package="zoo")
class GroupedConv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D` with ``groups > 1``, computed by TensorFlow's own Conv2D.

    Keras runs every grouped convolution of the TensorFlow backend through an XLA-compiled
    function (TensorFlow's CPU kernels without oneDNN cannot take a grouped kernel's
    gradient). On CPU that XLA kernel is ~400x slower than oneDNN's grouped convolution
    (a 3x3 conv, 256 channels in 32 groups, 8x32x32, forward + backward: 4.3 s against
    0.010 s on 2 cores) and recompiles for every new input size. This layer gives the
    grouped kernel to ``tf.nn.conv2d`` where the kernels take it (oneDNN, the x86 default),
    and otherwise convolves the groups one by one and concatenates (every build and
    converter takes that). A dilated 'same' conv pads explicitly first (ONNX Runtime
    rejects dilation with auto_pad SAME). Same weights, outputs and gradients as `Conv2D`.

    Args:
        As `keras.layers.Conv2D`; `groups` must divide both channel counts.

    Example:

    ```python
    conv = GroupedConv2D(256, 3, padding="same", groups=32, use_bias=False)
    y = conv(keras.ops.ones((2, 16, 16, 256)))  # (2, 16, 16, 256)
    ```

    Reference:
        Xie et al., "Aggregated Residual Transformations for Deep Neural Networks",
        CVPR 2017.
    """

    def convolution_op(self, inputs, kernel):
        strides, rates = list(self.strides), list(self.dilation_rate)
        eligible = (
            keras.backend.backend() == "tensorflow"
            and self.rank == 2
            and self.data_format == "channels_last"
            # TensorFlow's conv takes strides or dilations, not both (Keras decomposes).
            and (strides == [1, 1] or rates == [1, 1])
        )
        if not eligible:
            return super().convolution_op(inputs, kernel)
        import tensorflow as tf

        padding = self.padding.upper()
        if padding == "SAME" and rates != [1, 1]:
            pads = [[0, 0]]
            for size, rate in zip(kernel.shape[:2], rates):
                total = (int(size) - 1) * rate
                pads.append([total // 2, total - total // 2])
            inputs = tf.pad(inputs, [*pads, [0, 0]])
            padding = "VALID"
        if self.groups == 1 or direct_dilation():
            return tf.nn.conv2d(inputs, kernel, strides, padding, dilations=rates)
        pieces = zip(tf.split(inputs, self.groups, axis=-1), tf.split(kernel, self.groups, axis=-1))
        return tf.concat(
            [tf.nn.conv2d(x, k, strides, padding, dilations=rates) for x, k in pieces], axis=-1
        )
