"""DeepLab-lite: a light DeepLabV3+ (separable ASPP + stride-4 decoder)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from zoo.layers import BilinearUpsampling, BroadcastSpatial, conv_bn_act, separable_conv_bn_act
from zoo.models.base import (
    SegmentationModel,
    check_activation,
    check_num_classes,
    check_positive_int,
    check_rate,
    encoder_features,
    model_input,
    model_output,
    require_strides,
)
from zoo.registry import register_model

OUTPUT_STRIDES = (8, 16)
# Atrous rates at output stride 16; doubled at 8 (same receptive field in pixels).
RATES_AT_16 = (6, 12, 18)


@register_model(
    "deeplab_lite",
    output_stride=16,
    global_context=True,  # ASPP image pooling: every pixel sees the whole image
    tiny_config={
        "encoder": "mobilenet_lite",
        "encoder_kwargs": {"width_multiplier": 0.25},
        "aspp_channels": 16,
        "low_level_channels": 8,
        "decoder_channels": 16,
    },
    description="Light DeepLabV3+: separable ASPP + image pooling, stride-4 skip (<3M params).",
)
@keras.saving.register_keras_serializable(package="zoo")
class DeepLabLite(SegmentationModel):
    """A light DeepLabV3+ for CPU training.

    The encoder runs at `output_stride` 16 or 8 (its last stages dilated instead of
    strided). ASPP: a 1x1 conv branch, three depthwise-separable 3x3 atrous branches (rates
    6, 12, 18 at stride 16; 12, 24, 36 at stride 8) and an image-pooling branch (global
    average, 1x1 conv, broadcast back: works with unknown sizes), concatenated and projected
    to `aspp_channels`. The decoder upsamples (bilinear) to stride 4, concatenates the
    encoder's stride-4 features projected to `low_level_channels`, applies two separable
    3x3 convs and a 1x1 head, and upsamples 4x to the input size.

    Args:
        num_classes: output channels (1 for binary segmentation).
        input_shape: (height, width, channels); height/width may be None.
        encoder: registered encoder name supporting ``output_stride`` (dilation).
        encoder_kwargs: keyword arguments of the encoder builder.
        encoder_weights: pretrained encoder weights: None (random) or a source named in
            docs/models.md; read when the model is built, never when a saved model loads.
        output_stride: 16 or 8; input sizes must be multiples of it.
        aspp_channels: channels of each ASPP branch and of its projection.
        low_level_channels: channels of the projected stride-4 skip.
        decoder_channels: channels of the decoder's separable convs.
        dropout: dropout rate after the ASPP projection, in [0, 1).
        activation: None (logits), "sigmoid" or "softmax".
        pad_to_divisor: pad inputs to a multiple of `output_stride` and crop the logits back.

    Example:

    ```python
    model = zoo.create_model("deeplab_lite", num_classes=21, input_shape=(None, None, 3))
    ```

    Reference:
        Chen et al., "Encoder-Decoder with Atrous Separable Convolution for Semantic Image
        Segmentation" (DeepLabV3+), ECCV 2018.
    """

    @classmethod
    def divisor_for(cls, config: dict[str, Any] | None = None) -> int:
        """The output stride: the encoder's deepest map must tile the input exactly."""
        return int(cls.arguments(config)["output_stride"])

    def __init__(
        self,
        num_classes: int = 1,
        input_shape: Sequence[int | None] = (None, None, 3),
        encoder: str = "mobilenet_lite",
        encoder_kwargs: dict[str, Any] | None = None,
        encoder_weights: str | None = None,
        output_stride: int = 16,
        aspp_channels: int = 256,
        low_level_channels: int = 48,
        decoder_channels: int = 256,
        dropout: float = 0.1,
        activation: str | None = None,
        pad_to_divisor: bool = False,
        **kwargs,
    ):
        check_num_classes(num_classes)
        check_activation(activation)
        if output_stride not in OUTPUT_STRIDES:
            raise ValueError(
                f"Invalid value for argument `output_stride`: expected one of {OUTPUT_STRIDES}. "
                f"Received: output_stride={output_stride!r}"
            )
        for arg in ("aspp_channels", "low_level_channels", "decoder_channels"):
            check_positive_int(arg, locals()[arg])
        check_rate("dropout", dropout)
        if encoder_kwargs and "output_stride" in encoder_kwargs:
            raise ValueError(
                "Set the output stride with the model's `output_stride` argument, not in "
                f"`encoder_kwargs`. Received: encoder_kwargs={encoder_kwargs!r}"
            )
        divisor = self.divisor_for(locals())

        # === Encoder (dilated) ===
        image, x = model_input(input_shape, divisor, pad_to_divisor)
        features = encoder_features(
            encoder, x, {**(encoder_kwargs or {}), "output_stride": output_stride}, encoder_weights
        )
        require_strides(features, (4, output_stride), "deeplab_lite", encoder)
        high = features[output_stride]

        # === ASPP ===
        branches = [conv_bn_act(high, aspp_channels, 1, "aspp_conv1x1")]
        for rate in RATES_AT_16:
            rate = rate * 16 // output_stride
            branches.append(
                separable_conv_bn_act(high, aspp_channels, f"aspp_rate{rate}", dilation_rate=rate)
            )
        pooled = keras.layers.GlobalAveragePooling2D(keepdims=True, name="aspp_pool")(high)
        pooled = conv_bn_act(pooled, aspp_channels, 1, "aspp_pool_proj")
        branches.append(BroadcastSpatial(name="aspp_pool_broadcast")([pooled, high]))
        y = keras.layers.Concatenate(name="aspp_concat")(branches)
        y = conv_bn_act(y, aspp_channels, 1, "aspp_proj")
        if dropout > 0:
            y = keras.layers.Dropout(dropout, name="aspp_dropout")(y)

        # === Decoder ===
        # float32: TF 2.21's XLA rejects a bfloat16 bilinear resize in training.
        y = BilinearUpsampling(
            output_stride // 4,
            name="decoder_upsample",
            dtype="float32",
        )(y)
        low = conv_bn_act(features[4], low_level_channels, 1, "decoder_low_level")
        y = keras.layers.Concatenate(name="decoder_concat")([y, low])
        y = separable_conv_bn_act(y, decoder_channels, "decoder_conv1")
        y = separable_conv_bn_act(y, decoder_channels, "decoder_conv2")

        # === Head ===
        y = keras.layers.Conv2D(num_classes, 1, name="head_conv", dtype="float32")(y)
        logits = BilinearUpsampling(4, name="head_upsample", dtype="float32")(y)
        outputs = model_output(logits, image, activation, pad_to_divisor)
        super().__init__(inputs=image, outputs=outputs, **{"name": "deeplab_lite", **kwargs})

        # === Config ===
        self._init_config(locals())
