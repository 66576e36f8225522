"""`UpsampleConcatConv2D`: nearest 2x upsampling, skip concatenation and a 3x3 convolution as
one layer, computed without materializing the upsampled map."""

from __future__ import annotations

import keras

from zoo.build_context import is_exporting
from zoo.checks import check_positive_int

# A 3x3 kernel applied to a nearest-neighbour 2x upsampled map touches each low-resolution
# row twice: output row 2i sees rows (i-1, i, i) and row 2i+1 sees rows (i, i+1, i+1). So
# every output phase is a 2x2 kernel on the low-resolution map, and the four phases together
# are one stride-2 transposed convolution with the 4x4 kernel K[t] = sum_r FOLD[t, r] * W[r]
# (per spatial axis; "same" padding puts the 4x4 window at offset 1): 4 multiply-adds per
# output pixel and input channel instead of 9.
_FOLD = (
    (0.0, 0.0, 1.0),  # t = 0: W[2]         (phase 1, row i+1)
    (0.0, 1.0, 1.0),  # t = 1: W[1] + W[2]  (phase 0, row i)
    (1.0, 1.0, 0.0),  # t = 2: W[0] + W[1]  (phase 1, row i)
    (1.0, 0.0, 0.0),  # t = 3: W[0]         (phase 0, row i-1)
)


@keras.saving.register_keras_serializable(package="zoo")
class UpsampleConcatConv2D(keras.layers.Layer):
    """``Conv2D(filters, 3, padding="same", use_bias=False)`` applied to
    ``Concatenate()([UpSampling2D(2)(x), *skips])``, without the upsampled map.

    The U-Net decoder's first convolution of every block. The part of the kernel that sees
    the upsampled channels is folded into a 4x4 kernel and applied to `x` at its own
    resolution as a stride-2 transposed convolution; the skip channels get a plain 3x3
    convolution and the two are summed. The result is the same function (to float rounding)
    with 2.25x fewer multiply-adds on the upsampled channels and no upsampled or
    concatenated tensor in memory, forward or backward. The kernel has the shape and
    initialization of the equivalent `Conv2D` (``(3, 3, in_channels, filters)``, upsampled
    channels first), so weights move between the two formulations unchanged.

    Created inside `zoo.build_context.exporting()` (`export_mode`) the layer computes the unfolded
    form instead: nearest 2x upsampling (as depth-to-space), concatenation and the 3x3
    convolution with the same kernel. The transposed convolution needs its output shape at
    run time, and LiteRT's XNNPack delegate leaves such a convolution to the slow reference
    kernel (U-Net-R34 int8: 839 ms instead of 13 ms per 256x256 image); converters take the
    plain ops at any size.

    Args:
        filters: output channels.
        kernel_initializer: initializer of the ``(3, 3, in_channels, filters)`` kernel.

    Call arguments:
        inputs: the low-resolution map ``(B, H, W, C)``, or a list ``[x, *skips]`` whose
            skips are ``(B, 2H, 2W, C_i)``.

    Returns:
        ``(B, 2H, 2W, filters)``.

    Example:

    ```python
    x = keras.Input((16, 16, 64))
    skip = keras.Input((32, 32, 32))
    y = UpsampleConcatConv2D(48)([x, skip])  # (None, 32, 32, 48)
    ```

    Reference:
        Odena et al., "Deconvolution and Checkerboard Artifacts", Distill 2016 (resize-
        convolution as an alternative to transposed convolution).
    """

    def __init__(self, filters: int, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.filters = check_positive_int("filters", filters)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.export_mode = is_exporting()  # not in the config

    @staticmethod
    def _split_shapes(input_shape):
        first = input_shape[0]
        if first is None or isinstance(first, int):  # one shape, not a list of shapes
            return tuple(input_shape), []
        return tuple(first), [tuple(s) for s in input_shape[1:]]

    def build(self, input_shape):
        x_shape, skip_shapes = self._split_shapes(input_shape)
        channels = [x_shape[-1], *(s[-1] for s in skip_shapes)]
        if any(c is None for c in channels):
            raise ValueError(f"the channel axis of every input must be known, got {channels}")
        up = [None if d is None else 2 * d for d in x_shape[1:3]]
        for skip in skip_shapes:  # each skip must match the upsampled map, where both are known
            if any(u is not None and d not in (None, u) for u, d in zip(up, skip[1:3])):
                raise ValueError(
                    f"skip input of shape {skip} does not match the 2x upsampled input "
                    f"{x_shape} (expected height and width {up})"
                )
        self.upsampled_channels = int(x_shape[-1])
        self.kernel = self.add_weight(
            name="kernel",
            shape=(3, 3, int(sum(channels)), self.filters),
            initializer=self.kernel_initializer,
            autocast=False,  # folded in float32 and rounded once (below)
        )

    def call(self, inputs):
        import tensorflow as tf  # the transposed convolution needs a dynamic output shape

        if isinstance(inputs, (list, tuple)):
            x, skips = inputs[0], list(inputs[1:])
        else:
            x, skips = inputs, []
        if self.export_mode:
            return self._unfolded_call(x, skips)
        c = self.upsampled_channels
        # Folded from the variable's float32 value, rounded once to the compute dtype.
        kernel = tf.convert_to_tensor(self.kernel.value)
        # split, not slicing: its gradient is one concat, a slice's a zero-filled full copy
        up_kernel, skip_kernel = tf.split(kernel, [c, kernel.shape[2] - c], axis=2)
        fold = tf.constant(_FOLD, kernel.dtype)
        folded = tf.einsum("ar,bc,rcio->aboi", fold, fold, up_kernel)
        folded = tf.cast(folded, self.compute_dtype)
        x = tf.cast(x, self.compute_dtype)
        dynamic = tf.shape(x)
        b, h, w = (x.shape[i] if x.shape[i] is not None else dynamic[i] for i in range(3))
        out_shape = tf.stack([b, 2 * h, 2 * w, self.filters])
        y = tf.nn.conv2d_transpose(x, folded, out_shape, strides=2, padding="SAME")
        if skips:
            skip = skips[0] if len(skips) == 1 else tf.concat(skips, axis=-1)
            skip_kernel = tf.cast(skip_kernel, self.compute_dtype)
            y = y + tf.nn.conv2d(tf.cast(skip, self.compute_dtype), skip_kernel, 1, "SAME")
        return y

    def _unfolded_call(self, x, skips):
        """Upsample, concatenate, convolve: the export path (same function, plain ops)."""
        import tensorflow as tf

        x = tf.cast(x, self.compute_dtype)
        # Nearest 2x as depth-to-space of four copies (output pixel (2i + a, 2j + b) reads
        # channel block 2a + b, all copies of x[i, j]): exact at any size, and unlike
        # RESIZE_NEAREST_NEIGHBOR taken by LiteRT's XNNPack delegate (no graph partitions).
        y = tf.nn.depth_to_space(tf.concat([x, x, x, x], axis=-1), 2)
        if skips:
            y = tf.concat([y, *(tf.cast(s, self.compute_dtype) for s in skips)], axis=-1)
        kernel = tf.cast(tf.convert_to_tensor(self.kernel.value), self.compute_dtype)
        return tf.nn.conv2d(y, kernel, 1, "SAME")

    def compute_output_shape(self, input_shape):
        (b, h, w, _), _ = self._split_shapes(input_shape)
        return (b, None if h is None else 2 * h, None if w is None else 2 * w, self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }
