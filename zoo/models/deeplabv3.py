"""DeepLabV3: a dilated encoder and atrous spatial pyramid pooling."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from zoo.checks import check_bool, check_choice, check_positive_ints
from zoo.layers import BilinearUpsampling, aspp, conv_bn_act
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


@register_model(
    "deeplabv3",
    global_context=True,  # ASPP image pooling: every pixel sees the whole image
    output_stride=8,
    tiny_config={
        "encoder": "resnet18",
        "encoder_kwargs": {"base_width": 8},
        "decoder_channels": 16,
    },
    description="DeepLabV3: dilated encoder (stride 8) + ASPP and image pooling (smp layout).",
)
@keras.saving.register_keras_serializable(package="zoo")
class DeepLabV3(SegmentationModel):
    """DeepLabV3 with the layout of segmentation_models_pytorch's ``DeepLabV3``.

    The encoder runs at `output_stride` 8 (smp's default) or 16, its last stages dilated.
    ASPP: a 1x1 conv branch, three 3x3 atrous branches (plain, or depthwise-separable with
    `aspp_separable`) and image pooling, each conv-BN-ReLU with `decoder_channels`,
    concatenated, projected (1x1 conv-BN-ReLU) and dropped out; then a 3x3 conv-BN-ReLU, a
    1x1 conv with bias and a bilinear upsampling (align_corners=True) by `output_stride`.
    smp's rates (12, 24, 36) are the paper's for stride 8; at ``output_stride=16`` the
    paper uses ``atrous_rates=(6, 12, 18)``.

    With the defaults, `resnet34` and one class: 26,007,105 trainable parameters, smp 0.6's
    count (tested).

    Args:
        num_classes: output channels (1 for binary segmentation).
        input_shape: (height, width, channels); height/width may be None.
        encoder: registered encoder name that supports `output_stride` (dilation).
        encoder_kwargs: keyword arguments of the encoder builder (not `output_stride`).
        encoder_weights: pretrained encoder weights: None (random) or a source named in
            docs/models.md; read when the model is built, never when a saved model loads.
        output_stride: 8 or 16; input sizes must be multiples of it.
        decoder_channels: channels of the ASPP branches, projection and decoder conv.
        atrous_rates: the three dilation rates of the ASPP.
        aspp_separable: depthwise-separable atrous branches (smp's ``SeparableConv2d``).
        dropout: dropout rate after the ASPP projection, in [0, 1) (smp's
            ``decoder_aspp_dropout``).
        activation: None (logits), "sigmoid" or "softmax".
        pad_to_divisor: pad inputs to a multiple of `output_stride` and crop the logits back.

    Example:

    ```python
    model = zoo.create_model("deeplabv3", num_classes=21, input_shape=(None, None, 3))
    ```

    Reference:
        Chen et al., "Rethinking Atrous Convolution for Semantic Image Segmentation",
        arXiv:1706.05587, 2017.
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
        output_stride: int = 8,
        decoder_channels: int = 256,
        atrous_rates: Sequence[int] = (12, 24, 36),
        aspp_separable: bool = False,
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
            encoder, x, encoder_kwargs, encoder_weights, output_stride, "deeplabv3"
        )
        require_strides(features, (output_stride,), "deeplabv3", encoder)

        # === Decoder ===
        y = aspp(
            features[output_stride],
            decoder_channels,
            rates,
            "decoder_aspp",
            separable=aspp_separable,
            dropout=dropout,
        )
        y = conv_bn_act(y, decoder_channels, 3, "decoder")

        # === Head ===
        y = keras.layers.Conv2D(num_classes, 1, name="head_conv", dtype="float32")(y)
        logits = BilinearUpsampling(output_stride, align_corners=True, name="head_upsample")(y)
        outputs = model_output(logits, image, activation, pad_to_divisor)
        super().__init__(inputs=image, outputs=outputs, **{"name": "deeplabv3", **kwargs})

        # === Config ===
        self._init_config(locals())
