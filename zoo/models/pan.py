"""PAN: Pyramid Attention Network (feature pyramid attention + global attention upsampling)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from zoo.checks import check_bool, check_choice
from zoo.layers import BilinearUpsampling, BroadcastSpatial, HalvingMaxPooling2D, conv_bn_act
from zoo.models._common import dilated_encoder_features, stage_output
from zoo.models.base import (
    SegmentationModel,
    check_activation,
    check_num_classes,
    check_positive_int,
    model_input,
    model_output,
    require_strides,
)
from zoo.registry import register_model

OUTPUT_STRIDES = (8, 16, 32)
INTERPOLATIONS = ("bilinear", "nearest")


def _resize(x, reference, name: str):
    # align_corners=True as in smp; float32 (the layer's default): TF 2.21's XLA rejects
    # bfloat16 bilinear gradients.
    return BilinearUpsampling(None, align_corners=True, name=name)([x, reference])


def feature_pyramid_attention(x, channels: int, name: str, bias: bool = True):
    """FPA: a 3-level max-pooled pyramid of 7x7 / 5x5 / 3x3 conv-BN-ReLU with one channel,
    merged top-down (bilinear, align_corners=True), multiplies a 1x1 conv-BN-ReLU of `x`; a
    global-pooling branch is added. Convs have biases if `bias` (smp). Each pooling halves the
    map (floor) but keeps 1-pixel axes (`HalvingMaxPooling2D`), so small inputs work."""

    def cbr(y, filters, kernel, part):
        return conv_bn_act(y, filters, kernel, f"{name}_{part}", use_bias=bias)

    pooled = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_branch1_pool")(x)
    branch1 = cbr(pooled, channels, 1, "branch1")
    branch1 = BroadcastSpatial(name=f"{name}_branch1_broadcast")([branch1, x])
    mid = cbr(x, channels, 1, "mid")
    x1 = cbr(HalvingMaxPooling2D(name=f"{name}_down1_pool")(x), 1, 7, "down1")
    x2 = cbr(HalvingMaxPooling2D(name=f"{name}_down2_pool")(x1), 1, 5, "down2")
    x3 = HalvingMaxPooling2D(name=f"{name}_down3_pool")(x2)
    x3 = cbr(cbr(x3, 1, 3, "down3_1"), 1, 3, "down3_2")
    y = _resize(x3, x2, f"{name}_up3")
    y = keras.layers.Add(name=f"{name}_add2")([cbr(x2, 1, 5, "conv2"), y])
    y = _resize(y, x1, f"{name}_up2")
    y = keras.layers.Add(name=f"{name}_add1")([y, cbr(x1, 1, 7, "conv1")])
    y = _resize(y, x, f"{name}_up1")
    y = keras.layers.Multiply(name=f"{name}_multiply")([y, mid])
    return keras.layers.Add(name=f"{name}_add")([y, branch1])


def global_attention_upsample(
    low, high, factor: int, name: str, interpolation: str, bias: bool = True
):
    """GAU: the high-level map resized to the low-level one (`factor` times its size: 1 or
    2), plus the low-level map (3x3 conv-BN-ReLU) weighted per channel by a sigmoid gate of
    the high-level map's global average (1x1 conv-BN)."""
    channels = high.shape[-1]
    if factor == 1:  # smp resizes to the same size: the identity, whatever the mode
        up = high
    elif interpolation == "nearest":  # PyTorch's "nearest" by an integer factor: repeat
        up = keras.layers.UpSampling2D(factor, name=f"{name}_upsample")(high)
    else:  # align_corners=True as in smp
        up = BilinearUpsampling(factor, align_corners=True, name=f"{name}_upsample")(high)
    low = conv_bn_act(low, channels, 3, f"{name}_conv2", use_bias=bias)
    gate = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_conv1_pool")(high)
    gate = conv_bn_act(gate, channels, 1, f"{name}_conv1", activation="sigmoid", use_bias=bias)
    low = keras.layers.Multiply(name=f"{name}_multiply")([low, gate])
    return keras.layers.Add(name=f"{name}_add")([up, low])


@register_model(
    "pan",
    global_context=True,  # global pooling branches: every pixel sees the whole image
    output_stride=16,
    tiny_config={
        "encoder": "resnet18",
        "encoder_kwargs": {"base_width": 8},
        "decoder_channels": 8,
        # Pre-BN biases get an exactly zero gradient on the FPA's 1x1 maps at 64x64.
        "decoder_conv_bias": False,
    },
    description="PAN: feature pyramid attention (dilated encoder) + global attention upsampling.",
)
@keras.saving.register_keras_serializable(package="zoo")
class PAN(SegmentationModel):
    """Pyramid Attention Network with the layout of segmentation_models_pytorch's ``PAN``.

    The encoder runs at `output_stride` 16 (last stage dilated, smp's default), 32, or 8
    (last two stages dilated; not offered by smp). Feature pyramid attention (FPA) turns the
    deepest map into `decoder_channels` channels; three global attention upsampling (GAU)
    blocks then fuse, in turn, the outputs of the stages that have stride 16, 8 and 4 in the
    undilated encoder (with dilation, the stride-16 stage's output has the stride of the
    deepest map, as in smp). A 3x3 conv with bias and a 4x bilinear
    upsampling (align_corners=True) give the logits.

    smp's FPA pools its input three times in floor mode, so it fails when the deepest map is
    smaller than 8x8 (inputs under 128x128 at stride 16). Here each pooling halves an axis
    but never below one pixel (`HalvingMaxPooling2D`) and every upsampling targets the size
    of the map it is added to, so any input size that is a multiple of the divisor works,
    with the same parameters; wherever smp's pyramid is defined (the deepest map at least
    8x8) the outputs are identical.

    With the defaults, `resnet34` and one class: 21,475,816 trainable parameters, smp 0.6's
    count (tested).

    Args:
        num_classes: output channels (1 for binary segmentation).
        input_shape: (height, width, channels); height/width may be None.
        encoder: registered encoder name with stride 4-32 maps; at `output_stride` 16 one
            that supports dilation.
        encoder_kwargs: keyword arguments of the encoder builder.
        encoder_weights: pretrained encoder weights: None (random) or a source named in
            docs/models.md; read when the model is built, never when a saved model loads.
        output_stride: 16 (smp's default, dilated), 32 or 8; input sizes must be multiples
            of it.
        decoder_channels: channels of the FPA output and of every GAU block.
        decoder_interpolation: how GAU blocks resize the high-level map: "bilinear"
            (align_corners=True, smp's default) or "nearest".
        decoder_conv_bias: give the decoder's convs a bias (smp). Each is followed by a batch
            norm, which removes it in training (zero gradient); False drops these redundant
            weights (262 with the defaults).
        activation: None (logits), "sigmoid" or "softmax".
        pad_to_divisor: pad inputs to a multiple of the divisor and crop the logits back.

    Example:

    ```python
    model = zoo.create_model("pan", num_classes=1, input_shape=(None, None, 3))
    ```

    Reference:
        Li et al., "Pyramid Attention Network for Semantic Segmentation", BMVC 2018.
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
        decoder_channels: int = 32,
        decoder_interpolation: str = "bilinear",
        decoder_conv_bias: bool = True,
        activation: str | None = None,
        pad_to_divisor: bool = False,
        **kwargs,
    ):
        check_num_classes(num_classes)
        check_activation(activation)
        check_choice("output_stride", output_stride, OUTPUT_STRIDES)
        check_positive_int("decoder_channels", decoder_channels)
        check_choice("decoder_interpolation", decoder_interpolation, INTERPOLATIONS)
        check_bool("decoder_conv_bias", decoder_conv_bias)
        divisor = self.divisor_for(locals())

        # === Encoder ===
        image, x = model_input(input_shape, divisor, pad_to_divisor)
        features = dilated_encoder_features(
            encoder, x, encoder_kwargs, encoder_weights, output_stride, "pan"
        )
        required = [4] + [s for s in (8, 16, 32) if s <= output_stride]
        require_strides(features, required, "pan", encoder)
        deepest = features[output_stride]
        # The stages before the deepest, at their own (possibly dilated) resolution.
        stages = [
            stage_output(features, encoder, encoder_kwargs, s, output_stride) for s in (16, 8)
        ]

        # === Decoder ===
        y = feature_pyramid_attention(deepest, decoder_channels, "decoder_fpa", decoder_conv_bias)
        # (name, low-level map, its stride): with dilation a stage keeps the deepest stride.
        lows = [
            ("gau3", stages[0], min(16, output_stride)),
            ("gau2", stages[1], min(8, output_stride)),
            ("gau1", features[4], 4),
        ]
        stride = output_stride
        for name, low, low_stride in lows:
            y = global_attention_upsample(
                low,
                y,
                stride // low_stride,
                f"decoder_{name}",
                decoder_interpolation,
                decoder_conv_bias,
            )
            stride = low_stride

        # === Head ===
        y = keras.layers.Conv2D(num_classes, 3, padding="same", name="head_conv", dtype="float32")(
            y
        )
        logits = BilinearUpsampling(4, align_corners=True, name="head_upsample")(y)
        outputs = model_output(logits, image, activation, pad_to_divisor)
        super().__init__(inputs=image, outputs=outputs, **{"name": "pan", **kwargs})

        # === Config ===
        self._init_config(locals())
