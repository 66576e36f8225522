"""U-Net: an encoder, then decoder blocks that upsample and concatenate the skip features."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from zoo.layers import conv_bn_act, upsample_conv_bn_act
from zoo.models.base import (
    SegmentationModel,
    aux_head,
    check_activation,
    check_channels,
    check_deep_supervision,
    check_num_classes,
    encoder_features,
    model_input,
    model_output,
    require_strides,
    with_aux,
)
from zoo.registry import register_model


@register_model(
    "unet",
    output_stride=32,
    tiny_config={
        "encoder": "resnet18",
        "encoder_kwargs": {"base_width": 8},
        "decoder_channels": (16, 16, 8, 8, 8),
    },
    description="U-Net decoder (skip concatenation, two conv-BN-ReLU per stage).",
)
@keras.saving.register_keras_serializable(package="zoo")
class UNet(SegmentationModel):
    """U-Net with a registered encoder (segmentation_models_pytorch layout).

    The decoder has one block per entry of `decoder_channels`: with ``d`` entries it starts
    from the encoder's stride-``2**d`` features and each block upsamples 2x (nearest),
    concatenates the encoder features of the new stride if the encoder has them (none at
    stride 2 for encoders such as ConvNeXt; at stride 1 only with `full_resolution_skip`),
    then applies two 3x3 conv-BN-ReLU. A 3x3 conv head (with bias) gives the logits. Input
    sizes must be multiples of ``2**d``. The upsampling, concatenation and first
    convolution of a block are one `zoo.layers.UpsampleConcatConv2D`: the same function
    with 2.25x fewer multiply-adds on the upsampled channels (U-Net ResNet-34: 13.95
    instead of 15.63 forward GFLOP per 256x256 image).

    Args:
        num_classes: output channels (1 for binary segmentation).
        input_shape: (height, width, channels); height/width may be None.
        encoder: registered encoder name (see `zoo.list_encoders()`).
        encoder_kwargs: keyword arguments of the encoder builder, e.g. ``{"weights": None}``.
        encoder_weights: pretrained encoder weights: None (random) or a source named in
            docs/models.md; read when the model is built, never when a saved model loads.
        decoder_channels: channels of each decoder block, deepest first; its length is the
            depth.
        deep_supervision: also output auxiliary logits (`head_aux_<k>`, a 1x1 conv) of
            every decoder block but the last, at strides 2, 4, ... ``2**(depth-1)``: the
            outputs are ``[logits, aux_1 (stride 2), ..., aux_{depth-1}]``. Off: the graph and
            parameters are exactly those without it.
        activation: None (logits), "sigmoid" or "softmax".
        pad_to_divisor: pad inputs to a multiple of the divisor and crop the logits back.
        full_resolution_skip: also concatenate the encoder's stride-1 features (encoders
            whose first stage runs at full resolution, e.g. `vgg13_bn`) in the last block,
            as the original U-Net does. Off (smp's layout): the last block has no skip.
            Encoders without stride-1 features are unaffected.
        center_block: two 3x3 conv-BN-ReLU on the deepest features before the first block,
            keeping their channels (smp's Unet adds them for VGG encoders; a ported smp VGG
            U-Net has them).

    Example:

    ```python
    model = zoo.create_model("unet", num_classes=1, input_shape=(256, 256, 3))
    logits = model(images)  # (B, 256, 256, 1)
    ```

    Reference:
        Ronneberger et al., "U-Net: Convolutional Networks for Biomedical Image
        Segmentation", MICCAI 2015.
    """

    supports_deep_supervision = True

    @classmethod
    def aux_levels(cls, args: dict[str, Any]) -> int:
        return len(args["decoder_channels"]) - 1

    @classmethod
    def divisor_for(cls, config: dict[str, Any] | None = None) -> int:
        """``2**depth``: each decoder block doubles the resolution."""
        return 2 ** len(cls.arguments(config)["decoder_channels"])

    def __init__(
        self,
        num_classes: int = 1,
        input_shape: Sequence[int | None] = (None, None, 3),
        encoder: str = "resnet34",
        encoder_kwargs: dict[str, Any] | None = None,
        encoder_weights: str | None = None,
        decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
        deep_supervision: bool = False,
        activation: str | None = None,
        pad_to_divisor: bool = False,
        full_resolution_skip: bool = False,
        center_block: bool = False,
        **kwargs,
    ):
        check_num_classes(num_classes)
        check_activation(activation)
        channels = check_channels("decoder_channels", decoder_channels)
        check_deep_supervision(deep_supervision)
        for flag, value in (("full_resolution_skip", full_resolution_skip),
                            ("center_block", center_block)):  # fmt: skip
            if not isinstance(value, bool):
                raise ValueError(
                    f"Invalid value for argument `{flag}`: expected true or false. "
                    f"Received: {flag}={value!r}"
                )
        depth = len(channels)
        divisor = self.divisor_for(locals())

        # === Encoder ===
        image, x = model_input(input_shape, divisor, pad_to_divisor)
        features = encoder_features(encoder, x, encoder_kwargs, encoder_weights)
        require_strides(features, (divisor,), "unet", encoder)

        # === Decoder ===
        x = features[divisor]
        if center_block:  # smp's, for VGG encoders: two conv-BN-ReLU at the deepest width
            for i in (1, 2):
                x = conv_bn_act(x, int(x.shape[-1]), 3, f"decoder_center_conv{i}")
        stages = []  # every block's output but the last, deepest first
        for i, filters in enumerate(channels):
            stride = divisor // 2 ** (i + 1)
            name = f"decoder_block{i + 1}"
            usable = stride > 1 or full_resolution_skip
            skips = [features[stride]] if stride in features and usable else []
            # upsample + concatenate + conv1 as one layer: fewer FLOPs, no upsampled copy
            x = upsample_conv_bn_act(x, skips, filters, f"{name}_conv1")
            x = conv_bn_act(x, filters, 3, f"{name}_conv2")
            stages.append(x)

        # === Head ===
        logits = keras.layers.Conv2D(
            num_classes, 3, padding="same", name="head_conv", dtype="float32"
        )(x)
        outputs = model_output(logits, image, activation, pad_to_divisor)
        if deep_supervision:  # finest first: stage depth-1 (stride 2) is aux 1
            aux = [aux_head(y, num_classes, k) for k, y in enumerate(stages[-2::-1], 1)]
            outputs = with_aux(outputs, aux, deep_supervision)
        super().__init__(inputs=image, outputs=outputs, **{"name": "unet", **kwargs})

        # === Config ===
        self._init_config(locals())
