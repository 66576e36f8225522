"""Native MobileNetV2 encoder in torchvision's layout, as smp's ``mobilenet_v2``.

torchvision's ``MobileNetV2().features``: a 3x3/2 conv-BN-ReLU6 stem, 17 inverted residual
blocks (1x1 expansion, 3x3 depthwise, 1x1 linear projection; a residual where the shape
allows) and the final 1x1 conv-BN-ReLU6 to 1280 channels, which smp keeps as the stride-32
feature map (features 1, 3, 6, 13 and 18 at strides 2-32, 16 / 24 / 32 / 96 / 1280
channels). Convolutions pad as PyTorch does (symmetric, ``k // 2``), so torchvision's and
smp's weights compute what they did; output strides 16 and 8 dilate features 14-18 (and
7-13) as smp's ``make_dilated``. Unlike `mobilenet_lite` (the zoo's own light encoder for
DeepLab-lite), this one is for smp checkpoints and torchvision's ImageNet weights.

Reference:
    Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks", CVPR 2018.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from zoo import pretrained
from zoo.checks import check_positive
from zoo.encoders._common import (
    check_output_stride,
    native_encoder,
)
from zoo.encoders.mobilenet_lite import STAGES, _make_divisible
from zoo.layers import batch_norm
from zoo.registry import register_encoder

# torchvision's feature indices that smp returns, stride 2 ... 32.
OUT_INDEXES = (1, 3, 6, 13, 18)


def _conv_bn(x, filters, kernel, stride, dilation, name, depthwise=False, activation="relu6"):
    """Conv (no bias) padded as PyTorch pads it, BN, optional ReLU6."""
    pad = kernel // 2 * dilation
    if pad:
        x = keras.layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
    kwargs = {"strides": stride, "dilation_rate": dilation, "use_bias": False}
    if depthwise:
        x = keras.layers.DepthwiseConv2D(kernel, name=f"{name}_conv", **kwargs)(x)
    else:
        x = keras.layers.Conv2D(filters, kernel, name=f"{name}_conv", **kwargs)(x)
    x = batch_norm(f"{name}_bn")(x)
    if activation:
        x = keras.layers.ReLU(6.0, name=f"{name}_relu6")(x)
    return x


def inverted_residual(x, out: int, stride: int, expand: int, dilation: int, name: str):
    """torchvision's InvertedResidual (``hidden = round(in * expand)``)."""
    inputs, channels = x, int(x.shape[-1])
    if expand != 1:
        x = _conv_bn(x, int(round(channels * expand)), 1, 1, 1, f"{name}_expand")
    x = _conv_bn(x, int(x.shape[-1]), 3, stride, dilation, f"{name}_dw", depthwise=True)
    x = _conv_bn(x, out, 1, 1, 1, f"{name}_project", activation=None)
    if stride == 1 and channels == out:
        x = keras.layers.Add(name=f"{name}_add")([x, inputs])
    return x


def mobilenet_v2_features(x, width_mult: float, output_stride: int, name: str) -> dict:
    """Feature maps keyed by stride; dilated blocks (output stride 16 / 8) stay at 16 / 8."""
    check_output_stride(output_stride)
    # smp's make_dilated: features 7-13 form the stride-16 stage, 14-18 the stride-32 one.
    rates = {32: (1, 1), 16: (1, 2), 8: (2, 4)}[output_stride]
    x = _conv_bn(x, _make_divisible(32 * width_mult), 3, 2, 1, f"{name}_stem")
    features, stride, index = {}, 2, 1
    for expand, channels, blocks, block_stride in STAGES:
        for b in range(blocks):
            dilation = rates[1] if index >= 14 else rates[0] if index >= 7 else 1
            s = block_stride if b == 0 and dilation == 1 else 1
            out = _make_divisible(channels * width_mult)
            x = inverted_residual(x, out, s, expand, dilation, f"{name}_block{index}")
            stride *= s
            if index in OUT_INDEXES:
                features[stride] = x
            index += 1
    head = _make_divisible(1280 * max(1.0, width_mult))
    features[stride] = _conv_bn(x, head, 1, 1, 1, f"{name}_head")
    return features


@register_encoder(
    "mobilenet_v2",
    strides=(2, 4, 8, 16, 32),
    tiny_config={"width_mult": 0.25},
    output_strides=(8, 16, 32),
    pretrained=True,
    description=(
        "MobileNetV2 (torchvision layout with its 1280-channel last conv, as smp's "
        "mobilenet_v2); smp's weights imagenet."
    ),
)
def mobilenet_v2(
    inputs=None,
    *,
    input_shape: Sequence[int | None] = (None, None, 3),
    width_mult: float = 1.0,
    output_stride: int = 32,
    weights: str | None = None,
    input_normalization: str | None = "weights",
    input_range: Sequence[float] | None = None,
    name: str = "encoder",
):
    """MobileNetV2 encoder. Returns ``{stride: features}`` for a tensor, or a `keras.Model`.

    Args:
        inputs: image tensor in [0, 1], or None to get a standalone model.
        input_shape: shape of the standalone model's input (any number of channels).
        width_mult: torchvision's width multiplier (channels rounded to multiples of 8; the
            last conv keeps at least 1280).
        output_stride: 32, 16 or 8; below 32 the last blocks use dilation (as smp's).
        weights: None (random), "imagenet" (torchvision's ImageNet-1k weights as smp
            publishes them, from the Hugging Face hub) or the path of a torchvision / smp
            state dict (.safetensors, .pth). Pretrained weights bring their ImageNet
            normalization into the graph (inputs stay in [0, 1]).
        input_normalization: "weights" or None (the caller normalizes, as with smp).
        input_range: None, or ``[low, high]`` mapped linearly to [0, 1] inside the model.
        name: prefix of every layer name.
    """
    check_positive("width_mult", width_mult)
    return native_encoder(
        "mobilenet_v2", inputs, input_shape, weights, input_normalization, input_range, name,
        lambda x: mobilenet_v2_features(x, float(width_mult), output_stride, name),
    )  # fmt: skip


pretrained.register_encoder_weights(
    "mobilenet_v2",
    table="mobilenet_v2",
    first_conv="features.0.0",
    normalization=pretrained.IMAGENET,
    sources={
        "imagenet": pretrained.smp_hub_source(
            "mobilenet_v2",
            "imagenet",
            "e67aa804e17f7b404b629127eabbd224c4e0690b",
            description=(
                "torchvision's ImageNet-1k MobileNetV2 weights, as segmentation_models_pytorch "
                "publishes them (smp-hub/mobilenet_v2.imagenet)"
            ),
            license="BSD-3-Clause (torchvision)",
        )
    },
)
