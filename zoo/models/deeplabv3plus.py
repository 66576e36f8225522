"""DeepLabV3+: DeepLabV3's ASPP with a stride-4 decoder."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from zoo.checks import check_bool, check_choice, check_positive_ints
from zoo.layers import BilinearUpsampling, aspp, conv_bn_act, sepconv_bn_act
from zoo.models._common import dilated_encoder_features
from zoo.models.base import (
    SegmentationModel,
    check_activation,
    check_num_classes,
    check_positive_int,
    check_rate,
    model_input,
    model_output,
    require_strides,
)
from zoo.registry import register_model

OUTPUT_STRIDES = (8, 16)
LOW_LEVEL_CHANNELS = 48  # the paper's (and smp's) projection of the stride-4 map


@register_model(
    "deeplabv3plus",
    global_context=True,  # ASPP image pooling: every pixel sees the whole image
    output_stride=16,
    tiny_config={
        "encoder": "resnet18",
        "encoder_kwargs": {"base_width": 8},
        "decoder_channels": 16,
    },
    description="DeepLabV3+: dilated encoder, separable ASPP, stride-4 skip (smp layout).",
)
@keras.saving.register_keras_serializable(package="zoo")
class DeepLabV3Plus(SegmentationModel):
    """DeepLabV3+ with the layout of segmentation_models_pytorch's ``DeepLabV3Plus``.

    The encoder runs at `output_stride` 16 (smp's default) or 8, its last stages dilated.
    ASPP as in `deeplabv3` (separable atrous branches by default), followed by a separable
    3x3 conv-BN-ReLU; the result is upsampled bilinearly (align_corners=True) to stride 4,
    concatenated with the encoder's stride-4 map projected to 48 channels (1x1 conv-BN-ReLU)
    and fused by a separable 3x3 conv-BN-ReLU; a 1x1 conv with bias and a 4x bilinear
    upsampling (align_corners=True) give the logits. smp's separable conv is depthwise then
    pointwise with nothing between (the paper's Xception blocks normalize in between).

    smp keeps the rates (12, 24, 36) at stride 16, where the paper uses (6, 12, 18) (the
    field of view of (12, 24, 36) at stride 8): ``atrous_rates=(6, 12, 18)`` gives the
    paper's ASPP with the same parameters.

    `deeplab_lite` is the zoo's lighter relative: BN and ReLU after the depthwise conv too,
    rates scaled with the output stride, a second decoder conv, a MobileNet-style encoder by
    default (under 3M parameters), and no smp weight layout.

    With the defaults, `resnet34` and one class: 22,437,457 trainable parameters, smp 0.6's
    count (tested).

    Args:
        num_classes: output channels (1 for binary segmentation).
        input_shape: (height, width, channels); height/width may be None.
        encoder: registered encoder name with a stride-4 map that supports `output_stride`.
        encoder_kwargs: keyword arguments of the encoder builder (not `output_stride`).
        encoder_weights: pretrained encoder weights: None (random) or a source named in
            docs/models.md; read when the model is built, never when a saved model loads.
        output_stride: 16 or 8; input sizes must be multiples of it.
        decoder_channels: channels of the ASPP and of the decoder convs.
        atrous_rates: the three dilation rates of the ASPP.
        aspp_separable: depthwise-separable atrous branches.
        dropout: dropout rate after the ASPP projection, in [0, 1) (smp's
            ``decoder_aspp_dropout``).
        activation: None (logits), "sigmoid" or "softmax".
        pad_to_divisor: pad inputs to a multiple of `output_stride` and crop the logits back.

    Example:

    ```python
    model = zoo.create_model("deeplabv3plus", num_classes=21, atrous_rates=(6, 12, 18))
    ```

    Reference:
        Chen et al., "Encoder-Decoder with Atrous Separable Convolution for Semantic Image
        Segmentation", ECCV 2018.
    """

    @classmethod
    def divisor_for(cls, config: dict[str, Any] | None = None) -> int:
        """The output stride: the encoder's deepest map must tile the input exactly."""
        return int(cls.arguments(config)["output_stride"])

    def __init__(
        self,
        num_classes: int = 1,
        input_shape: Sequence[int | None] = (None, None, 3),
        encoder: str = "resnet34",
        encoder_kwargs: dict[str, Any] | None = None,
        encoder_weights: str | None = None,
        output_stride: int = 16,
        decoder_channels: int = 256,
        atrous_rates: Sequence[int] = (12, 24, 36),
        aspp_separable: bool = True,
        dropout: float = 0.5,
        activation: str | None = None,
        pad_to_divisor: bool = False,
        **kwargs,
    ):
        check_num_classes(num_classes)
        check_activation(activation)
        check_choice("output_stride", output_stride, OUTPUT_STRIDES)
        check_positive_int("decoder_channels", decoder_channels)
        rates = check_positive_ints("atrous_rates", atrous_rates, 3)
        check_bool("aspp_separable", aspp_separable)
        check_rate("dropout", dropout)
        divisor = self.divisor_for(locals())

        # === Encoder (dilated) ===
        image, x = model_input(input_shape, divisor, pad_to_divisor)
        features = dilated_encoder_features(
            encoder, x, encoder_kwargs, encoder_weights, output_stride, "deeplabv3plus"
        )
        require_strides(features, (4, output_stride), "deeplabv3plus", encoder)

        # === ASPP ===
        y = aspp(
            features[output_stride],
            decoder_channels,
            rates,
            "decoder_aspp",
            separable=aspp_separable,
            dropout=dropout,
        )
        y = sepconv_bn_act(y, decoder_channels, "decoder_aspp_sepconv")

        # === Decoder ===
        # float32 (the layer's default): TF 2.21's XLA rejects a bfloat16 bilinear resize.
        y = BilinearUpsampling(output_stride // 4, align_corners=True, name="decoder_up")(y)
        low = conv_bn_act(features[4], LOW_LEVEL_CHANNELS, 1, "decoder_block1")
        y = keras.layers.Concatenate(name="decoder_concat")([y, low])
        y = sepconv_bn_act(y, decoder_channels, "decoder_block2")

        # === Head ===
        y = keras.layers.Conv2D(num_classes, 1, name="head_conv", dtype="float32")(y)
        logits = BilinearUpsampling(4, align_corners=True, name="head_upsample")(y)
        outputs = model_output(logits, image, activation, pad_to_divisor)
        super().__init__(inputs=image, outputs=outputs, **{"name": "deeplabv3plus", **kwargs})

        # === Config ===
        self._init_config(locals())
