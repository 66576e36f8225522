"""`Resize2D`: PyTorch's `F.interpolate` (bilinear with or without `align_corners`, nearest) as a
serializable layer that takes unknown spatial sizes."""

from __future__ import annotations

import keras

INTERPOLATIONS = ("bilinear", "nearest")


@keras.saving.register_keras_serializable(package="zoo")
class Resize2D(keras.layers.Layer):
    """Resizes height and width by an integer `scale`, or to the size of a reference tensor,
    with the sampling rule of PyTorch's ``F.interpolate``.

    * ``interpolation="bilinear", align_corners=False``: half-pixel centres (source
      coordinate ``(dst + 0.5) * in / out - 0.5``, clamped at 0), the rule of Keras'
      ``UpSampling2D(interpolation="bilinear")`` and ``tf.image.resize``.
    * ``interpolation="bilinear", align_corners=True``: the corner pixels of input and output
      coincide (source coordinate ``dst * (in - 1) / (out - 1)``). Keras and ``tf.image``
      have no such mode; segmentation_models_pytorch uses it in most of its heads.
    * ``interpolation="nearest"``: source pixel ``floor(dst * in / out)``, PyTorch's
      ``"nearest"`` (not ``"nearest-exact"``); for an integer `scale` the same as
      ``UpSampling2D(scale)``.

    Bilinear resizes are computed in float32 (the kernel's output type) and cast to the
    layer's compute dtype; build the layer with ``dtype="float32"`` where it may run under a
    mixed-precision policy, since TF 2.21's XLA rejects bfloat16 bilinear gradients.

    Args:
        scale: integer factor for both axes, or None to resize to a reference's size.
        interpolation: "bilinear" or "nearest".
        align_corners: bilinear only: PyTorch's ``align_corners``.

    Call arguments:
        inputs: a tensor ``(B, H, W, C)`` (with `scale`), or a list ``[x, reference]``
            (without `scale`): `x` is resized to the height and width of `reference`.

    Example:

    ```python
    x = keras.Input((None, None, 8))
    y = Resize2D(4, align_corners=True, dtype="float32")(x)  # (None, None, None, 8)
    skip = keras.Input((None, None, 16))
    z = Resize2D()([x, skip])  # x at skip's size, half-pixel bilinear
    ```
    """

    def __init__(
        self,
        scale: int | None = None,
        interpolation: str = "bilinear",
        align_corners: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        bad_int = isinstance(scale, bool) or not isinstance(scale, int) or scale < 1
        if scale is not None and bad_int:
            raise ValueError(
                "Invalid value for argument `scale`: expected a positive integer or None. "
                f"Received: scale={scale!r}"
            )
        if interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"Invalid value for argument `interpolation`: expected one of {INTERPOLATIONS}. "
                f"Received: interpolation={interpolation!r}"
            )
        if not isinstance(align_corners, bool) or (align_corners and interpolation != "bilinear"):
            raise ValueError(
                "Invalid value for argument `align_corners`: expected a bool, and True only with "
                f"interpolation='bilinear'. Received: align_corners={align_corners!r}"
            )
        self.scale = scale
        self.interpolation = interpolation
        self.align_corners = align_corners

    def _split(self, inputs):
        paired = isinstance(inputs, (list, tuple))
        if paired == (self.scale is not None):
            raise ValueError(
                "Resize2D takes one tensor when `scale` is set and a list [x, reference] when "
                f"it is None. Received scale={self.scale!r} and "
                f"{'a list' if paired else 'one tensor'}."
            )
        return (inputs[0], inputs[1]) if paired else (inputs, None)

    def call(self, inputs):
        import tensorflow as tf  # the zoo runs on the TensorFlow backend

        x, reference = self._split(inputs)
        if reference is not None:
            size = tf.shape(reference)[1:3]
        else:
            size = tf.shape(x)[1:3] * self.scale
        if self.interpolation == "nearest":
            return tf.raw_ops.ResizeNearestNeighbor(
                images=x, size=size, align_corners=False, half_pixel_centers=False
            )
        y = tf.raw_ops.ResizeBilinear(
            images=x,
            size=size,
            align_corners=self.align_corners,
            half_pixel_centers=not self.align_corners,
        )
        return tf.cast(y, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        paired = not (input_shape[0] is None or isinstance(input_shape[0], int))
        if paired:
            (b, _, _, c), (_, h, w, _) = input_shape
            return (b, h, w, c)
        b, h, w, c = input_shape
        scale = self.scale or 1
        return (b, None if h is None else h * scale, None if w is None else w * scale, c)

    def get_config(self):
        return {
            **super().get_config(),
            "scale": self.scale,
            "interpolation": self.interpolation,
            "align_corners": self.align_corners,
        }
