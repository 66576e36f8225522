"""Functional helpers that add conv / norm / activation layers with stable names."""

from __future__ import annotations

import keras
from keras import ops

from zoo.build_context import is_exporting
from zoo.layers.dilated_conv2d import DilatedConv2D
from zoo.layers.upsample_concat_conv2d import UpsampleConcatConv2D

# PyTorch defaults (momentum 0.1 in its convention = 0.9 here, eps 1e-5): short trainings
# get usable moving statistics, and ported recipes behave the same.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


@keras.saving.register_keras_serializable(package="zoo")
class SyncBatchNormalization(keras.layers.BatchNormalization):
    """`BatchNormalization(synchronized=True)` with fast paths for one replica and inference.

    * More than one replica in sync, training: Keras' global-batch statistics, computed in two
      passes like the plain moments (`_global_moments`).
    * One replica, training, and every inference call on 4D channels-last inputs: TensorFlow's
      fused kernel (`FusedBatchNormV3`), one op forward and one backward instead of about ten
      element-wise ones (+8% float32, +22% mixed_bfloat16 U-Net training on a CPU, see
      docs/benchmarks.md). Same statistics as Keras' layer: the moving variance stays the
      biased batch variance (the kernel's n/(n-1) correction is undone).
    * Anything else (masks, renorm, other ranks or axes): Keras' own path. Keras'
      synchronized moments would otherwise build a full-size tensor of ones and all-reduce
      three sums even without a distribution strategy.
    * Export (`export_mode`, set when the layer is created inside `zoo.build_context.exporting()`):
      inference runs Keras' own path, ``(x - mean) * rsqrt(var + eps) * gamma + beta`` as
      plain element-wise ops that every converter takes and folds into the preceding
      convolution (LiteRT and ONNX have no `FusedBatchNormV3`).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Not part of the config: a model rebuilt inside `exporting()` gets the export path.
        self.export_mode = is_exporting()

    def call(self, inputs, training=None, mask=None):
        training = bool(training) and self.trainable
        if self.export_mode and not training:
            return super().call(inputs, training=False, mask=mask)
        if self._fusable(inputs, mask) and not (training and _replicas_in_sync() > 1):
            return self._fused_call(inputs, training)
        return super().call(inputs, training=training, mask=mask)

    def _fusable(self, inputs, mask) -> bool:
        return (
            keras.backend.backend() == "tensorflow"
            and mask is None
            and not self.renorm
            and self.center
            and self.scale
            and len(inputs.shape) == 4
            and self.axis in (3, -1)
            and keras.backend.standardize_dtype(inputs.dtype) in ("float32", "bfloat16")
        )

    def _fused_call(self, inputs, training: bool):
        import tensorflow as tf  # only reached on the TensorFlow backend

        if training:  # batch statistics; the kernel ignores these inputs
            mean = variance = tf.constant([], tf.float32)
        else:
            mean = tf.cast(self.moving_mean.value, tf.float32)
            variance = tf.cast(self.moving_variance.value, tf.float32)
        y, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
            x=inputs,
            scale=tf.cast(self.gamma.value, tf.float32),
            offset=tf.cast(self.beta.value, tf.float32),
            mean=mean,
            variance=variance,
            epsilon=self.epsilon,
            data_format="NHWC",
            is_training=training,
        )
        if not training:
            return tf.cast(y, self.compute_dtype)
        # The kernel normalizes by the biased variance but returns the unbiased one
        # (n / (n - 1)); Keras keeps the biased one in moving_variance.
        n = tf.cast(tf.reduce_prod(tf.shape(inputs)[:3]), tf.float32)
        variance = variance * tf.math.divide_no_nan(n - 1.0, n)
        momentum = self.momentum
        self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
        self.moving_variance.assign(self.moving_variance * momentum + variance * (1.0 - momentum))
        return tf.cast(y, self.compute_dtype)

    def _moments(self, inputs, mask):
        if not self.synchronized or mask is not None:
            return super()._moments(inputs, mask)
        if _replicas_in_sync() <= 1:  # one replica, or cross-replica context: local moments
            return ops.moments(inputs, axes=self._reduction_axes)
        return _global_moments(inputs, self._reduction_axes)


def _global_moments(x, axes):
    """Mean and variance over the global batch, computed like `ops.moments` (two passes).

    Keras' synchronized moments take ``E[x^2] - E[x]^2`` in float32 while one device uses
    `tf.nn.moments` (mean of squared deviations): where a channel's variance is small next to
    its squared mean (e.g. 1x1 maps of a small batch) the subtraction cancels most digits,
    so N replicas and one device normalized differently (mean 20, std 0.1: outputs 1% apart,
    see tests/test_distribute.py). Squaring deviations from the global mean, like one device
    does, keeps the replicas within float32 rounding of it.
    """
    import tensorflow as tf  # the zoo runs on the TensorFlow backend

    ctx = tf.distribute.get_replica_context()
    dtype = x.dtype
    if dtype in (tf.float16, tf.bfloat16):  # statistics in float32, as ops.moments does
        x = tf.cast(x, tf.float32)
    count = tf.cast(tf.reduce_prod(tf.gather(tf.shape(x), axes)), x.dtype)
    total = ctx.all_reduce(tf.distribute.ReduceOp.SUM, tf.reduce_sum(x, axis=axes, keepdims=True))
    count = ctx.all_reduce(tf.distribute.ReduceOp.SUM, count)
    mean = tf.math.divide_no_nan(total, count)
    # As in tf.nn.moments: the variance's gradient through the mean is zero in exact math.
    squares = tf.reduce_sum(tf.square(x - tf.stop_gradient(mean)), axis=axes, keepdims=True)
    variance = tf.math.divide_no_nan(ctx.all_reduce(tf.distribute.ReduceOp.SUM, squares), count)
    mean, variance = tf.squeeze(mean, axes), tf.squeeze(variance, axes)
    return tf.cast(mean, dtype), tf.cast(variance, dtype)


def _replicas_in_sync() -> int:
    import tensorflow as tf  # the zoo runs on the TensorFlow backend

    context = tf.distribute.get_replica_context()
    return 0 if context is None else context.num_replicas_in_sync


def batch_norm(
    name: str, momentum: float = BN_MOMENTUM, epsilon: float = BN_EPSILON
) -> keras.layers.BatchNormalization:
    """The one BatchNormalization every zoo block uses.

    `synchronized=True` makes MirroredStrategy on N replicas compute the statistics of the
    global batch, so N replicas train exactly like one device with the same global batch.

    Args:
        name: layer name, e.g. ``"encoder_stem_bn"``.
        momentum, epsilon: Keras' (momentum = 1 - PyTorch's); PyTorch's defaults unless a
            network was trained with others (EfficientNet: 0.99, 1e-3).
    """
    return SyncBatchNormalization(momentum=momentum, epsilon=epsilon, synchronized=True, name=name)


def conv_bn_act(
    x,
    filters: int,
    kernel_size: int,
    name: str,
    strides: int = 1,
    dilation_rate: int = 1,
    activation: str | None = "relu",
    use_bias: bool = False,
):
    """`Conv2D` (no bias by default: BN has one) -> `batch_norm` -> activation. Layers are
    named ``{name}_conv``, ``{name}_bn`` and ``{name}_{activation}``. `use_bias=True` only to
    match a reference that has the (redundant) bias, e.g. smp's PAN. Dilated convs are
    `DilatedConv2D` (the same function, computed directly on CPU)."""
    conv = DilatedConv2D if dilation_rate != 1 else keras.layers.Conv2D
    x = conv(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        dilation_rate=dilation_rate,
        use_bias=use_bias,
        name=f"{name}_conv",
    )(x)
    x = batch_norm(f"{name}_bn")(x)
    if activation is not None:
        x = keras.layers.Activation(activation, name=f"{name}_{activation}")(x)
    return x


def subsample_for_pointwise(x, strides: int, name: str):
    """``(x, strides)`` for a 1x1 convolution of `x` with `strides`: the same inputs, except
    that fewer than 16 channels at a stride above 1 are subsampled here (``x[:, ::s, ::s]``,
    a 1x1 max pool) and the convolution runs at stride 1, which computes the same.

    Why: oneDNN's 1x1 weight gradient at a stride above 1 writes past its workspace when the
    input has fewer channels than its channel block (16 with AVX-512, 8 with AVX2): training
    crashes or its gradients are wrong (uxlfoundation/oneDNN#6035). MobileOne's stem has
    such a convolution on the image itself.
    """
    if strides > 1 and int(x.shape[-1]) < 16:
        x = keras.layers.MaxPooling2D(1, strides=strides, name=f"{name}_subsample")(x)
        strides = 1
    return x, strides


def squeeze_excite(x, reduced: int, name: str, activation: str = "relu", gate: str = "sigmoid"):
    """Squeeze-and-excitation: the channels of `x` scaled by a gate computed from their
    global average (1x1 conv with bias to `reduced` channels, `activation` (ReLU; SiLU in
    EfficientNet), 1x1 conv with bias back, `gate` (sigmoid; MobileNetV3's hard sigmoid)).
    Layers ``{name}_pool``, ``{name}_fc1``, ``{name}_fc2``, ``{name}_scale``.

    Reference:
        Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018.
    """
    s = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_pool")(x)
    s = keras.layers.Conv2D(reduced, 1, activation=activation, name=f"{name}_fc1")(s)
    s = keras.layers.Conv2D(int(x.shape[-1]), 1, activation=gate, name=f"{name}_fc2")(s)
    return keras.layers.Multiply(name=f"{name}_scale")([x, s])


def upsample_conv_bn_act(x, skips: list, filters: int, name: str, activation: str = "relu"):
    """Nearest 2x upsampling of `x`, concatenation with `skips`, then 3x3 conv -> `batch_norm`
    -> activation, the first three as one `UpsampleConcatConv2D` (same function, 2.25x fewer
    multiply-adds on the upsampled channels). Layers are named like `conv_bn_act`'s."""
    x = UpsampleConcatConv2D(filters, name=f"{name}_conv")([x, *skips])
    x = batch_norm(f"{name}_bn")(x)
    return keras.layers.Activation(activation, name=f"{name}_{activation}")(x)


def separable_conv_bn_act(
    x,
    filters: int,
    name: str,
    kernel_size: int = 3,
    dilation_rate: int = 1,
    activation: str = "relu",
):
    """Depthwise conv -> BN -> act -> pointwise 1x1 conv -> BN -> act (DeepLabV3+ style,
    normalization after both halves)."""
    x = keras.layers.DepthwiseConv2D(
        kernel_size,
        padding="same",
        dilation_rate=dilation_rate,
        use_bias=False,
        name=f"{name}_depthwise",
    )(x)
    x = batch_norm(f"{name}_depthwise_bn")(x)
    x = keras.layers.Activation(activation, name=f"{name}_depthwise_{activation}")(x)
    return conv_bn_act(x, filters, 1, f"{name}_pointwise", activation=activation)
