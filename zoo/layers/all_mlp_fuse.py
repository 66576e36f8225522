"""`AllMLPFuse`: SegFormer's per-level projections, resize, concatenation and 1x1 fuse
convolution as one layer, computed without the concatenated map."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="zoo")
class AllMLPFuse(keras.layers.Layer):
    """``Conv2D(units, 1, use_bias=False)`` of the concatenation of ``resize(Dense(units)(x_i))``
    over the levels ``x_i``, computed folded.

    The all-MLP decoder projects every encoder level to `units` channels (a dense layer with
    bias), resizes it to `target_stride` (bilinear with half-pixel centres when upsampling, as
    ``UpSampling2D(interpolation="bilinear")``; a 2x2 average, which is what that bilinear
    resize does when halving, for a level finer than the target), concatenates the levels in
    input order and fuses them with a 1x1 convolution. Every step but the resize is linear per
    pixel, and a bilinear resize or an average commutes with per-pixel affine maps (its
    weights sum to one), so level ``i``'s projection ``(A_i, a_i)`` and its slice ``F_i`` of
    the fuse kernel are multiplied into one ``(C_i, units)`` map ``A_i F_i`` (bias
    ``a_i F_i``) applied at the level's own resolution; the resized results are summed. Same
    function (to float rounding), same variables, but the fuse costs ``C_i * units`` instead
    of ``levels * units * units`` multiply-adds per output pixel (SegFormer-B0 at stride 4:
    32 x 256 instead of 1024 x 256), and neither the resized projections nor their
    concatenation is stored for the backward pass. The resizes and the sum run in float32
    (TF 2.21's XLA rejects bfloat16 bilinear-resize gradients); the result is cast to the
    compute dtype.

    Variables: ``linear{stride}_kernel`` ``(C_i, units)`` and ``linear{stride}_bias``
    ``(units,)`` per level (the dense layers'), ``fuse_kernel`` ``(1, 1, levels * units,
    units)`` (the convolution's).

    Args:
        units: channels of the projections and of the output.
        strides: the input levels' strides, in input order (deepest first in SegFormer);
            each a power-of-two multiple of `target_stride`, or half of it.
        target_stride: the stride of the output.

    Call arguments:
        inputs: list of ``(B, H_i, W_i, C_i)`` maps, one per entry of `strides`.

    Returns:
        ``(B, H, W, units)`` at `target_stride`.

    Example:

    ```python
    fuse = AllMLPFuse(256, strides=(32, 16, 8, 4))
    y = fuse([f32, f16, f8, f4])  # (B, H/4, W/4, 256), before batch norm and ReLU
    ```

    Reference:
        Xie et al., "SegFormer: Simple and Efficient Design for Semantic Segmentation with
        Transformers", NeurIPS 2021.
    """

    def __init__(
        self, units: int, strides: Sequence[int], target_stride: int = 4, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(units, bool) or not isinstance(units, int) or units < 1:
            raise ValueError(
                "Invalid value for argument `units`: expected a positive integer. "
                f"Received: units={units!r}"
            )
        if (
            isinstance(target_stride, bool)
            or not isinstance(target_stride, int)
            or target_stride < 1
        ):
            raise ValueError(
                "Invalid value for argument `target_stride`: expected a positive integer. "
                f"Received: target_stride={target_stride!r}"
            )
        ok = isinstance(strides, (list, tuple)) and len(strides) > 0
        ok = ok and len(set(strides)) == len(strides)
        for s in strides if ok else ():
            ratio = s / target_stride if isinstance(s, int) and not isinstance(s, bool) else 0
            ok = ok and (ratio == 0.5 or (ratio >= 1 and ratio.is_integer() and _pow2(int(ratio))))
        if not ok:
            raise ValueError(
                "Invalid value for argument `strides`: expected distinct strides, each a "
                f"power-of-two multiple of target_stride={target_stride} or half of it. "
                f"Received: strides={strides!r}"
            )
        self.units = units
        self.strides = tuple(int(s) for s in strides)
        self.target_stride = target_stride

    def build(self, input_shape):
        if len(input_shape) != len(self.strides):
            raise ValueError(
                f"AllMLPFuse expects {len(self.strides)} inputs (strides {self.strides}); "
                f"received {len(input_shape)} shapes: {input_shape}"
            )
        self.kernels, self.biases = [], []
        for stride, shape in zip(self.strides, input_shape):
            self.kernels.append(
                self.add_weight(
                    name=f"linear{stride}_kernel",
                    shape=(shape[-1], self.units),
                    initializer="glorot_uniform",
                )
            )
            self.biases.append(
                self.add_weight(
                    name=f"linear{stride}_bias", shape=(self.units,), initializer="zeros"
                )
            )
        self.fuse_kernel = self.add_weight(
            name="fuse_kernel",
            shape=(1, 1, len(self.strides) * self.units, self.units),
            initializer="glorot_uniform",
        )
        self.built = True

    def call(self, inputs):
        import tensorflow as tf  # the zoo runs on the TensorFlow backend

        fuse = ops.reshape(ops.cast(self.fuse_kernel, "float32"), (-1, self.units))
        target = None
        for stride, x in zip(self.strides, inputs):
            if stride == self.target_stride:
                target = tf.shape(x)[1:3]
        if target is None:  # no level at the target stride: from the first one
            ratio = self.strides[0] / self.target_stride
            target = tf.cast(tf.cast(tf.shape(inputs[0])[1:3], tf.float32) * ratio, tf.int32)
        total = None
        for i, (stride, x) in enumerate(zip(self.strides, inputs)):
            part = fuse[i * self.units : (i + 1) * self.units]  # this level's input channels
            kernel = ops.matmul(ops.cast(self.kernels[i], "float32"), part)
            bias = ops.matmul(ops.cast(self.biases[i], "float32")[None], part)[0]
            y = ops.matmul(x, ops.cast(kernel, x.dtype)) + ops.cast(bias, x.dtype)
            y = ops.cast(y, "float32")
            if stride > self.target_stride:
                y = tf.image.resize(y, target, method="bilinear")
            elif stride < self.target_stride:
                y = tf.nn.avg_pool2d(y, 2, 2, "VALID")
            total = y if total is None else total + y
        return ops.cast(total, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        for stride, shape in zip(self.strides, input_shape):
            if stride == self.target_stride:
                return (shape[0], shape[1], shape[2], self.units)
        shape, ratio = input_shape[0], self.strides[0] // self.target_stride
        return (
            shape[0],
            None if shape[1] is None else shape[1] * ratio,
            None if shape[2] is None else shape[2] * ratio,
            self.units,
        )

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "strides": list(self.strides),
            "target_stride": self.target_stride,
        }


def _pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0
