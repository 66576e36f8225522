"""MA-Net: multi-scale attention network (position-wise attention + multi-scale fusion
attention blocks)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from zoo.checks import check_choice
from zoo.layers import PositionAttention, conv_bn_act, upsample_conv_bn_act
from zoo.layers.position_attention import VARIANTS
from zoo.models.base import (
    SegmentationModel,
    check_activation,
    check_channels,
    check_num_classes,
    check_positive_int,
    encoder_features,
    model_input,
    model_output,
    require_strides,
)
from zoo.registry import register_model


def position_attention_block(x, channels: int, name: str, variant: str):
    """PAB: 1x1 query/key convs to `channels`, a 3x3 value conv, pairwise attention over all
    positions, a residual add and a 3x3 output conv (all convs with bias, no norm: smp)."""
    width = x.shape[-1]
    key = keras.layers.Conv2D(channels, 1, name=f"{name}_top_conv")(x)
    query = keras.layers.Conv2D(channels, 1, name=f"{name}_center_conv")(x)
    value = keras.layers.Conv2D(width, 3, padding="same", name=f"{name}_bottom_conv")(x)
    y = PositionAttention(variant, name=f"{name}_attention")([query, key, value])
    y = keras.layers.Add(name=f"{name}_add")([x, y])
    return keras.layers.Conv2D(width, 3, padding="same", name=f"{name}_out_conv")(y)


def squeeze_excitation(x, reduction: int, name: str):
    """Global average -> 1x1 conv (C / reduction, at least 1) -> ReLU -> 1x1 conv (C) ->
    sigmoid."""
    channels = x.shape[-1]
    y = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_pool")(x)
    y = keras.layers.Conv2D(max(1, channels // reduction), 1, name=f"{name}_conv1")(y)
    y = keras.layers.Activation("relu", name=f"{name}_relu")(y)
    y = keras.layers.Conv2D(channels, 1, name=f"{name}_conv2")(y)
    return keras.layers.Activation("sigmoid", name=f"{name}_sigmoid")(y)


@register_model(
    "manet",
    global_context=True,  # position attention and SE gates: every pixel sees the whole image
    output_stride=32,
    tiny_config={
        "encoder": "resnet18",
        "encoder_kwargs": {"base_width": 8},
        "decoder_channels": [16, 8, 8, 8, 8],
        "pab_channels": 8,
        "se_reduction": 1,
    },
    description="MA-Net: position-wise attention at the bottleneck + SE-gated U-Net decoder.",
)
@keras.saving.register_keras_serializable(package="zoo")
class MANet(SegmentationModel):
    """MA-Net with the layout of segmentation_models_pytorch's ``MAnet``.

    The deepest encoder map goes through a position-wise attention block (PAB). Each decoder
    block with an encoder skip is a multi-scale fusion attention block (MFAB): 3x3 and 1x1
    conv-BN-ReLU bring the input to the skip's channels, it is upsampled 2x (nearest) and
    scaled per channel by the sum of two squeeze-excitation gates (of itself and of the
    skip), concatenated with the skip and passed through two 3x3 conv-BN-ReLU. The last
    block (stride 1) and any level without an encoder map are plain U-Net blocks. A 3x3
    conv with bias gives the logits. The gating is applied before the upsampling and the
    upsampling, concatenation and first conv are one `UpsampleConcatConv2D`: the same
    function for fewer FLOPs (a per-channel scale commutes with nearest upsampling, and the
    global average of a nearest-upsampled map is that of the map).

    smp's PAB normalizes its attention with one softmax over all ``(H*W)**2`` pairs of an
    image and reshapes the ``(H*W, C)`` result to ``(C, H, W)`` without transposing it,
    mixing positions and channels. ``pab_attention="smp"`` (default) reproduces that;
    ``"standard"`` is the published block (softmax per position, layout kept), with the
    same weights.

    With the defaults, `resnet34` and one class: 31,783,633 trainable parameters, smp 0.6's
    count (tested).

    Args:
        num_classes: output channels (1 for binary segmentation).
        input_shape: (height, width, channels); height/width may be None.
        encoder: registered encoder name with the stride ``2**depth`` map.
        encoder_kwargs: keyword arguments of the encoder builder.
        encoder_weights: pretrained encoder weights: None (random) or a source named in
            docs/models.md; read when the model is built, never when a saved model loads.
        decoder_channels: output channels of the decoder blocks, deepest first; the length
            is the depth (divisor ``2**depth``).
        pab_channels: query/key channels of the position-wise attention.
        pab_attention: "smp" (default) or "standard", see above.
        se_reduction: channel reduction of the squeeze-excitation gates (C / se_reduction
            hidden units, at least one).
        activation: None (logits), "sigmoid" or "softmax".
        pad_to_divisor: pad inputs to a multiple of the divisor and crop the logits back.

    Example:

    ```python
    model = zoo.create_model("manet", num_classes=2, pab_attention="standard")
    ```

    Reference:
        Fan et al., "MA-Net: A Multi-Scale Attention Network for Liver and Tumor
        Segmentation", IEEE Access 2020.
    """

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
        pab_channels: int = 64,
        pab_attention: str = "smp",
        se_reduction: int = 16,
        activation: str | None = None,
        pad_to_divisor: bool = False,
        **kwargs,
    ):
        check_num_classes(num_classes)
        check_activation(activation)
        channels = check_channels("decoder_channels", decoder_channels)
        check_positive_int("pab_channels", pab_channels)
        check_choice("pab_attention", pab_attention, VARIANTS)
        check_positive_int("se_reduction", se_reduction)
        depth = len(channels)
        divisor = self.divisor_for(locals())

        # === Encoder ===
        image, x = model_input(input_shape, divisor, pad_to_divisor)
        features = encoder_features(encoder, x, encoder_kwargs, encoder_weights)
        require_strides(features, (divisor,), "manet", encoder)

        # === Decoder ===
        y = position_attention_block(
            features[divisor], pab_channels, "decoder_center", pab_attention
        )
        for i, filters in enumerate(channels):
            name = f"decoder_blocks_{i}"
            stride = divisor // 2 ** (i + 1)
            skip = features.get(stride) if stride > 1 else None
            if skip is None:
                y = upsample_conv_bn_act(y, [], filters, f"{name}_conv1")
            else:
                y = conv_bn_act(y, y.shape[-1], 3, f"{name}_hl_conv_0")
                y = conv_bn_act(y, skip.shape[-1], 1, f"{name}_hl_conv_1")
                gates = [
                    squeeze_excitation(y, se_reduction, f"{name}_se_hl"),
                    squeeze_excitation(skip, se_reduction, f"{name}_se_ll"),
                ]
                gate = keras.layers.Add(name=f"{name}_gate")(gates)
                y = keras.layers.Multiply(name=f"{name}_gated")([y, gate])
                y = upsample_conv_bn_act(y, [skip], filters, f"{name}_conv1")
            y = conv_bn_act(y, filters, 3, f"{name}_conv2")

        # === Head ===
        logits = keras.layers.Conv2D(
            num_classes, 3, padding="same", name="head_conv", dtype="float32"
        )(y)
        outputs = model_output(logits, image, activation, pad_to_divisor)
        super().__init__(inputs=image, outputs=outputs, **{"name": "manet", **kwargs})

        # === Config ===
        self._init_config(locals())
