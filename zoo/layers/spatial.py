"""Small serializable layers for shape handling and preprocessing (instead of `Lambda`)."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops

from zoo.build_context import is_exporting
from zoo.checks import check_positive_int


def _round_up(size: int | None, divisor: int) -> int | None:
    return None if size is None else -(-size // divisor) * divisor


@keras.saving.register_keras_serializable(package="zoo")
class PadToMultiple(keras.layers.Layer):
    """Zero-pads height and width (bottom/right) up to the next multiple of `divisor`.

    Args:
        divisor: the padded height and width are multiples of it.

    Example:

    ```python
    y = PadToMultiple(32)(keras.ops.ones((1, 70, 100, 3)))  # (1, 96, 128, 3)
    ```
    """

    def __init__(self, divisor: int, **kwargs):
        super().__init__(**kwargs)
        check_positive_int("divisor", divisor)
        self.divisor = divisor

    def call(self, inputs):
        shape = ops.shape(inputs)
        pad_h = (-shape[1]) % self.divisor
        pad_w = (-shape[2]) % self.divisor
        return ops.pad(inputs, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]])

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        return (b, _round_up(h, self.divisor), _round_up(w, self.divisor), c)

    def get_config(self):
        return {**super().get_config(), "divisor": self.divisor}


@keras.saving.register_keras_serializable(package="zoo")
class CropToReference(keras.layers.Layer):
    """Crops `x` (top-left anchored) to the height and width of `reference`.

    Undoes `PadToMultiple`. Call arguments: a list ``[x, reference]``.

    Example:

    ```python
    y = CropToReference()([keras.ops.ones((1, 96, 128, 2)), keras.ops.ones((1, 70, 100, 3))])
    ```
    """

    def call(self, inputs):
        x, reference = inputs
        shape = ops.shape(reference)
        return x[:, : shape[1], : shape[2], :]

    def compute_output_shape(self, input_shape):
        x_shape, ref_shape = input_shape
        return (x_shape[0], ref_shape[1], ref_shape[2], x_shape[3])


@keras.saving.register_keras_serializable(package="zoo")
class CheckDivisible(keras.layers.Layer):
    """Identity that raises at run time if the height or width is not a multiple of `divisor`.

    Used only when the spatial size is unknown when the model is built (``None`` dims);
    static sizes are checked in Python instead. Created inside `zoo.build_context.exporting()` it
    is a plain identity (`export_mode`): converters reject assertion ops, and the exported
    signature pads or checks the size itself (`zoo.export`).

    Args:
        divisor: required divisor of height and width.
    """

    def __init__(self, divisor: int, **kwargs):
        super().__init__(**kwargs)
        check_positive_int("divisor", divisor)
        self.divisor = divisor
        self.export_mode = is_exporting()  # not in the config

    def call(self, inputs):
        import tensorflow as tf  # the zoo runs on the TensorFlow backend

        if self.export_mode:
            return inputs
        shape = tf.shape(inputs)
        ok = tf.logical_and(
            tf.equal(shape[1] % self.divisor, 0), tf.equal(shape[2] % self.divisor, 0)
        )
        check = tf.debugging.Assert(
            ok,
            [
                f"Input height and width must be multiples of {self.divisor} "
                "(or build the model with pad_to_divisor=True). Received (H, W):",
                shape[1:3],
            ],
        )
        with tf.control_dependencies([check]):
            return tf.identity(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "divisor": self.divisor}


@keras.saving.register_keras_serializable(package="zoo")
class BroadcastSpatial(keras.layers.Layer):
    """Broadcasts a ``(B, 1, 1, C)`` tensor to the height and width of `reference`.

    The image-pooling branch of ASPP: works when the spatial size is only known at run time.
    Call arguments: a list ``[pooled, reference]``.
    """

    def call(self, inputs):
        pooled, reference = inputs
        ref = ops.shape(reference)
        return ops.broadcast_to(pooled, (ops.shape(pooled)[0], ref[1], ref[2], pooled.shape[-1]))

    def compute_output_shape(self, input_shape):
        pooled_shape, ref_shape = input_shape
        return (pooled_shape[0], ref_shape[1], ref_shape[2], pooled_shape[3])


@keras.saving.register_keras_serializable(package="zoo")
class ChannelAffine(keras.layers.Layer):
    """Per-channel ``x * scale + offset``, optionally reversing the channel order first.

    Maps our [0, 1] RGB input to what a pretrained network expects, e.g. Caffe-style
    BGR minus the ImageNet mean for `keras.applications.ResNet50`.

    Args:
        scale: one value per channel (or a single value).
        offset: one value per channel (or a single value).
        reverse_channels: RGB -> BGR before scaling.

    Example:

    ```python
    layer = ChannelAffine(scale=[255.0] * 3, offset=[-103.939, -116.779, -123.68],
                          reverse_channels=True)
    ```
    """

    def __init__(
        self,
        scale: Sequence[float] | float = 1.0,
        offset: Sequence[float] | float = 0.0,
        reverse_channels: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.scale = [float(v) for v in scale] if isinstance(scale, Sequence) else float(scale)
        self.offset = [float(v) for v in offset] if isinstance(offset, Sequence) else float(offset)
        self.reverse_channels = bool(reverse_channels)

    def call(self, inputs):
        x = ops.flip(inputs, axis=-1) if self.reverse_channels else inputs
        scale = ops.convert_to_tensor(self.scale, dtype=x.dtype)
        offset = ops.convert_to_tensor(self.offset, dtype=x.dtype)
        return x * scale + offset

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "scale": self.scale,
            "offset": self.offset,
            "reverse_channels": self.reverse_channels,
        }


@keras.saving.register_keras_serializable(package="zoo")
class FoldedOffset(keras.layers.Layer):
    """Adds the position-dependent bias of a normalization folded into a zero-padded conv.

    A model normalizing ``(x - mean) / std`` before a zero-padded convolution ``W`` computes
    ``conv(x, W / std) - conv(support, W * mean / std)``, where ``support`` is 1 inside the
    image and 0 in the padding. This layer adds the second term to the first:
    ``features + conv(support, kernel)`` (valid convolution of the zero-padded support), so a
    1-channel model with the RGB normalization folded into its first kernel is exact at the
    borders too (`zoo.pretrained.adapt_input_kernel`). The kernel is not trained: it is
    preprocessing.

    Args:
        kernel_size: the convolution's kernel size (int or pair).
        strides: its strides (int or pair).
        padding: zeros added on each side of the image before it (int or pair).

    Call arguments:
        inputs: ``[features, image]``: the convolution's output ``(B, H', W', F)`` and its
            input image ``(B, H, W, C)`` (only the image's size is used).

    Example:

    ```python
    y = FoldedOffset(7, strides=2, padding=3)([conv_output, image])
    ```
    """

    def __init__(self, kernel_size=1, strides=1, padding=0, **kwargs):
        super().__init__(**kwargs)
        self.kernel_size = _pair("kernel_size", kernel_size)
        self.strides = _pair("strides", strides)
        self.padding = _pair("padding", padding, minimum=0)

    def build(self, input_shape):
        features_shape, _ = input_shape
        self.kernel = self.add_weight(
            name="kernel",
            shape=(*self.kernel_size, 1, int(features_shape[-1])),
            initializer="zeros",
            trainable=False,
        )

    def call(self, inputs):
        features, image = inputs
        # One image's support is enough: every image of the batch has the same size.
        support = ops.ones_like(image[:1, :, :, :1])
        if any(self.padding):
            (ph, pw) = self.padding
            support = ops.pad(support, [[0, 0], [ph, ph], [pw, pw], [0, 0]])
        kernel = ops.cast(self.kernel, support.dtype)
        offset = ops.conv(support, kernel, strides=self.strides, padding="valid")
        return features + ops.cast(offset, features.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {
            **super().get_config(),
            "kernel_size": list(self.kernel_size),
            "strides": list(self.strides),
            "padding": list(self.padding),
        }


def _pair(name: str, value, minimum: int = 1) -> tuple[int, int]:
    values = (value, value) if isinstance(value, int) else tuple(value)
    if len(values) != 2 or any(
        isinstance(v, bool) or not isinstance(v, int) or v < minimum for v in values
    ):
        raise ValueError(
            f"Invalid value for argument `{name}`: expected an integer >= {minimum} or a pair "
            f"of them. Received: {name}={value!r}"
        )
    return values
