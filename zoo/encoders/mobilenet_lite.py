"""A light native MobileNetV2-style encoder for CPU training (DeepLab-lite's default).

Stem 3x3/2 conv, then inverted residual blocks (1x1 expand, 3x3 depthwise, 1x1 linear
projection, residual when shapes match) with ReLU6, in MobileNetV2's stage layout. The
final 1x1 1280-channel classifier conv is left out: decoders do not need it.

Reference:
    Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks", CVPR 2018.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from zoo.checks import check_positive
from zoo.encoders._common import check_output_stride, run_encoder
from zoo.layers import batch_norm, conv_bn_act
from zoo.registry import register_encoder

# (expansion, channels, blocks, stride) as in MobileNetV2.
STAGES = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def _make_divisible(value: float, divisor: int = 8) -> int:
    # MobileNet channel rounding: nearest multiple of 8, never below 90% of the target.
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def inverted_residual(x, expansion: int, filters: int, strides: int, dilation: int, name: str):
    """MobileNetV2 block: expand (1x1) -> depthwise 3x3 -> linear projection (1x1)."""
    in_channels = x.shape[-1]
    y = x
    if expansion != 1:
        y = conv_bn_act(y, in_channels * expansion, 1, f"{name}_expand", activation="relu6")
    y = keras.layers.DepthwiseConv2D(
        3,
        strides=strides,
        dilation_rate=dilation,
        padding="same",
        use_bias=False,
        name=f"{name}_depthwise",
    )(y)
    y = batch_norm(f"{name}_depthwise_bn")(y)
    y = keras.layers.Activation("relu6", name=f"{name}_depthwise_relu6")(y)
    y = conv_bn_act(y, filters, 1, f"{name}_project", activation=None)
    if strides == 1 and in_channels == filters:
        y = keras.layers.Add(name=f"{name}_add")([x, y])
    return y


def mobilenet_lite_features(
    x, width_multiplier: float = 1.0, output_stride: int = 32, name: str = "encoder"
) -> dict:
    """Feature maps keyed by stride: {2, 4, 8, 16, 32} at output_stride 32; lower output
    strides dilate the later stages and stop the keys there."""
    check_output_stride(output_stride)
    features = {}
    x = conv_bn_act(
        x, _make_divisible(32 * width_multiplier), 3, f"{name}_stem", strides=2, activation="relu6"
    )
    stride, dilation = 2, 1
    for stage, (expansion, channels, blocks, stage_stride) in enumerate(STAGES):
        filters = _make_divisible(channels * width_multiplier)
        if stride * stage_stride > output_stride:
            dilation *= stage_stride
            stage_stride = 1
        stride *= stage_stride
        for block in range(blocks):
            x = inverted_residual(
                x,
                expansion,
                filters,
                stage_stride if block == 0 else 1,
                dilation,
                name=f"{name}_stage{stage + 1}_block{block + 1}",
            )
        # Later stages at the same stride overwrite: the deepest map per stride is kept.
        features[stride] = x
    return features


@register_encoder(
    "mobilenet_lite",
    strides=(2, 4, 8, 16, 32),
    tiny_config={"width_multiplier": 0.25},
    output_strides=(8, 16, 32),
    pretrained=False,
    description="Native MobileNetV2-style encoder (width multiplier), 1.8M params at 1.0.",
)
def mobilenet_lite(
    inputs=None,
    *,
    input_shape: Sequence[int | None] = (None, None, 3),
    width_multiplier: float = 1.0,
    output_stride: int = 32,
    name: str = "encoder",
):
    """Light MobileNetV2-style encoder. Returns ``{stride: features}`` or a `keras.Model`.

    Args:
        inputs: image tensor, or None to get a standalone model.
        input_shape: shape of the standalone model's input.
        width_multiplier: scales every stage's channels (MobileNet's alpha).
        output_stride: 32, 16 or 8; below 32 the later stages use dilation.
        name: prefix of every layer name.
    """
    check_positive("width_multiplier", width_multiplier)
    return run_encoder(
        inputs,
        input_shape,
        name,
        lambda x: mobilenet_lite_features(x, float(width_multiplier), output_stride, name),
    )
