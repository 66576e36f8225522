"""Native Xception encoder in the layout of Cadene's pretrainedmodels, as smp's ``xception``.

The original Xception (Chollet), as pretrainedmodels ports it from Keras and smp builds it:
two 3x3 convs (stride 2, then 1; smp pads both by one pixel, so the stride-2 map is half the
input), twelve residual blocks of ReLU-separable conv-BN units (depthwise 3x3 and pointwise
1x1, no bias) with a 1x1/2 conv-BN shortcut where the shape changes and a 3x3/2 max-pool
ending the strided ones, then two separable conv-BN exits (1536 and 2048 channels). Feature
maps are smp's: the stem's ReLU (64 channels, stride 2), blocks 1, 2 and 11 (128, 256, 728)
and the last batch norm without a ReLU (2048, stride 32). Max-pools pad with -inf as
PyTorch's (`zoo.layers.PaddedMaxPooling2D`: they follow a batch norm, so zeros would not
do). Pooling downsamples, so there is no dilated mode (output stride 32 only, as in smp).
Checkpoint keys: ``conv1``, ``bn1``, ``block{b}.rep.{i}.conv1`` / ``.pointwise`` / ``.{i}``,
``block{b}.skip`` / ``skipbn``, ``conv3`` / ``conv4`` (the ``xception`` port table).

Reference:
    Chollet, "Xception: Deep Learning with Depthwise Separable Convolutions", CVPR 2017.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from zoo import pretrained
from zoo.checks import check_positive
from zoo.encoders._common import (
    native_encoder,
)
from zoo.layers import PaddedMaxPooling2D, batch_norm
from zoo.registry import register_encoder

# Blocks 1-12: output channels, separable units, stride, whether the first unit widens
# (pretrainedmodels' grow_first; block 12 widens in its last unit).
BLOCKS = [(128, 2, 2, True), (256, 2, 2, True), (728, 2, 2, True)]
BLOCKS += [(728, 3, 1, True)] * 8 + [(1024, 2, 2, False)]
STEM, EXIT = (32, 64), (1536, 2048)
FEATURES = {1: 4, 2: 8, 11: 16}  # block -> the stride smp returns it at


def _separable_bn(x, filters: int, name: str):
    """pretrainedmodels' SeparableConv2d (depthwise 3x3, pointwise 1x1, no bias), then BN."""
    x = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"{name}_dw")(x)
    x = keras.layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_pw")(x)
    return batch_norm(f"{name}_bn")(x)


def xception_block(x, filters: int, units: int, stride: int, grow_first: bool, name, relu_first):
    """Separable units (ReLU first, except block 1's first), a max-pool if strided; plus
    the input or its 1x1 conv-BN projection."""
    inputs, channels = x, int(x.shape[-1])
    for unit in range(1, units + 1):
        widen = unit == 1 if grow_first else unit == units
        if unit > 1 or relu_first:
            x = keras.layers.ReLU(name=f"{name}_sep{unit}_relu")(x)
        x = _separable_bn(x, filters if widen else int(x.shape[-1]), f"{name}_sep{unit}")
    if stride > 1:
        x = PaddedMaxPooling2D(3, stride, 1, name=f"{name}_pool")(x)
    skip = inputs
    if filters != channels or stride > 1:
        skip = keras.layers.Conv2D(
            filters, 1, strides=stride, use_bias=False, name=f"{name}_skip_conv"
        )(inputs)
        skip = batch_norm(f"{name}_skip_bn")(skip)
    return keras.layers.Add(name=f"{name}_add")([x, skip])


def xception_features(x, width_scale: float = 1.0, name: str = "encoder") -> dict:
    """Xception feature maps keyed by stride 2 ... 32 (smp's choice of tensors)."""

    def width(c: int) -> int:
        return max(1, int(round(c * width_scale)))

    # smp pads both stem convs by one pixel (pretrainedmodels: none).
    x = keras.layers.ZeroPadding2D(1, name=f"{name}_stem1_pad")(x)
    x = keras.layers.Conv2D(
        width(STEM[0]), 3, strides=2, use_bias=False, name=f"{name}_stem1_conv"
    )(x)
    x = keras.layers.ReLU(name=f"{name}_stem1_relu")(batch_norm(f"{name}_stem1_bn")(x))
    x = keras.layers.Conv2D(
        width(STEM[1]), 3, padding="same", use_bias=False, name=f"{name}_stem2_conv"
    )(x)
    x = keras.layers.ReLU(name=f"{name}_stem2_relu")(batch_norm(f"{name}_stem2_bn")(x))
    features = {2: x}
    for b, (filters, units, stride, grow_first) in enumerate(BLOCKS, start=1):
        x = xception_block(
            x, width(filters), units, stride, grow_first, f"{name}_block{b}", relu_first=b > 1
        )
        if b in FEATURES:
            features[FEATURES[b]] = x
    x = keras.layers.ReLU(name=f"{name}_exit1_relu")(
        _separable_bn(x, width(EXIT[0]), f"{name}_exit1")
    )
    features[32] = _separable_bn(x, width(EXIT[1]), f"{name}_exit2")
    return features


def params(width_scale: float = 1.0) -> int:
    """Parameters of pretrainedmodels' Xception without its classifier (BN: scale, offset)."""

    def width(c: int) -> int:
        return max(1, int(round(c * width_scale)))

    a, channels = width(STEM[0]), width(STEM[1])
    total = 27 * a + 2 * a + 9 * a * channels + 2 * channels
    for filters, units, stride, grow_first in BLOCKS:
        cin, out = channels, width(filters)
        for unit in range(1, units + 1):
            widen = unit == 1 if grow_first else unit == units
            target = out if widen else channels
            total += 9 * channels + channels * target + 2 * target
            channels = target
        if stride > 1 or out != cin:
            total += cin * out + 2 * out
    for c in EXIT:
        total += 9 * channels + channels * width(c) + 2 * width(c)
        channels = width(c)
    return total


@register_encoder(
    "xception",
    strides=(2, 4, 8, 16, 32),
    tiny_config={"width_scale": 0.125},
    output_strides=(32,),
    pretrained=True,
    description=(
        f"Xception (pretrainedmodels layout, 12 separable residual blocks), "
        f"{params() / 1e6:.1f}M params; smp's weights imagenet."
    ),
)
def xception(
    inputs=None,
    *,
    input_shape: Sequence[int | None] = (None, None, 3),
    width_scale: float = 1.0,
    weights: str | None = None,
    input_normalization: str | None = "weights",
    input_range: Sequence[float] | None = None,
    name: str = "encoder",
):
    """Xception encoder. Returns ``{stride: features}`` for a tensor, or a `keras.Model`.

    Args:
        inputs: image tensor in [0, 1], or None to get a standalone model.
        input_shape: shape of the standalone model's input (any number of channels).
        width_scale: every layer's channels times this (rounded; 1 = the original), to
            shrink the network for tests.
        weights: None (random), "imagenet" (the Keras ImageNet weights as pretrainedmodels
            converted them and segmentation_models_pytorch publishes them, from the Hugging
            Face hub) or the path of a pretrainedmodels / smp state dict (.safetensors,
            .pth). Pretrained weights bring their normalization ([0, 1] -> [-1, 1]) into the
            graph.
        input_normalization: "weights" or None (the caller normalizes, as with smp).
        input_range: None, or ``[low, high]``: intensities mapped linearly so that low -> 0
            and high -> 1, inside the model, before the weights' normalization.
        name: prefix of every layer name.
    """
    check_positive("width_scale", width_scale)
    return native_encoder(
        "xception", inputs, input_shape, weights, input_normalization, input_range, name,
        lambda x: xception_features(x, float(width_scale), name),
    )  # fmt: skip


pretrained.register_encoder_weights(
    "xception",
    table="xception",
    first_conv="conv1",
    normalization=pretrained.INCEPTION,
    sources={
        "imagenet": pretrained.smp_hub_source(
            "xception",
            "imagenet",
            "01cfaf27c11353b1f0c578e7e26d2c000ea91049",
            description=(
                "Keras' ImageNet-1k Xception weights as converted by Cadene's "
                "pretrainedmodels, as segmentation_models_pytorch publishes them "
                "(smp-hub/xception.imagenet)"
            ),
            license="MIT (Keras) / BSD-3-Clause (pretrainedmodels)",
        )
    },
)
