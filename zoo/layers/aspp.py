"""DeepLab's atrous spatial pyramid pooling (ASPP) and the separable convolution of
segmentation_models_pytorch's DeepLab decoders, as functional helpers with stable names."""

from __future__ import annotations

from collections.abc import Sequence

import keras

from zoo.layers.blocks import batch_norm, conv_bn_act
from zoo.layers.dilated_separable_conv2d import DilatedSeparableConv2D
from zoo.layers.spatial import BroadcastSpatial


def sepconv_bn_act(
    x,
    filters: int,
    name: str,
    kernel_size: int = 3,
    dilation_rate: int = 1,
    activation: str = "relu",
):
    """Depthwise conv -> pointwise 1x1 conv (one `SeparableConv2D`, no bias, nothing between
    the two) -> `batch_norm` -> activation: smp's ``SeparableConv2d`` + BN + ReLU. (The zoo's
    `separable_conv_bn_act` normalizes after both halves instead.) Layers are named
    ``{name}_conv``, ``{name}_bn`` and ``{name}_{activation}``."""
    separable = DilatedSeparableConv2D if dilation_rate != 1 else keras.layers.SeparableConv2D
    x = separable(
        filters,
        kernel_size,
        padding="same",
        dilation_rate=dilation_rate,
        use_bias=False,
        name=f"{name}_conv",
    )(x)
    x = batch_norm(f"{name}_bn")(x)
    return keras.layers.Activation(activation, name=f"{name}_{activation}")(x)


def aspp(
    x,
    channels: int,
    rates: Sequence[int],
    name: str,
    separable: bool = False,
    dropout: float = 0.0,
):
    """Atrous spatial pyramid pooling: a 1x1 conv branch, one 3x3 atrous branch per rate
    (plain or `sepconv_bn_act`), and image pooling (global average -> 1x1 conv -> BN -> ReLU,
    broadcast back, which equals any interpolation of a 1x1 map); concatenated, projected by
    1x1 conv -> BN -> ReLU and dropped out (plain dropout, as in smp and torchvision).

    Branch `i` is named ``{name}_convs_{i}`` (the pooling branch last), then
    ``{name}_concat`` and ``{name}_project``, following smp's ``ASPP`` module.

    Reference:
        Chen et al., "Rethinking Atrous Convolution for Semantic Image Segmentation"
        (DeepLabV3), arXiv:1706.05587, 2017.
    """
    branches = [conv_bn_act(x, channels, 1, f"{name}_convs_0")]
    for i, rate in enumerate(rates, start=1):
        branch = f"{name}_convs_{i}"
        if separable:
            branches.append(sepconv_bn_act(x, channels, branch, dilation_rate=rate))
        else:
            branches.append(conv_bn_act(x, channels, 3, branch, dilation_rate=rate))
    pool = f"{name}_convs_{len(rates) + 1}"
    pooled = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{pool}_pool")(x)
    pooled = conv_bn_act(pooled, channels, 1, pool)
    branches.append(BroadcastSpatial(name=f"{pool}_broadcast")([pooled, x]))
    y = keras.layers.Concatenate(name=f"{name}_concat")(branches)
    y = conv_bn_act(y, channels, 1, f"{name}_project")
    if dropout > 0:
        y = keras.layers.Dropout(dropout, name=f"{name}_project_dropout")(y)
    return y
