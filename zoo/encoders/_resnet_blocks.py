"""The blocks and stems of the ResNet family (`zoo.encoders.resnet`, its bottleneck and
squeeze-and-excitation variants): torchvision's basic and bottleneck blocks, Caffe's SENet
options, and the 7x7 or three-3x3 stems with the weights' normalization in front."""

from __future__ import annotations

import keras

from zoo.layers import (
    ChannelAffine,
    DilatedConv2D,
    FoldedOffset,
    GroupedConv2D,
    batch_norm,
    conv_bn_act,
    squeeze_excite,
    subsample_for_pointwise,
)


def torch_conv_bn_act(
    x,
    filters: int,
    kernel_size: int,
    name: str,
    strides: int = 1,
    dilation_rate: int = 1,
    activation: str | None = "relu",
    torch_padding: bool = False,
):
    """`conv_bn_act`; with `torch_padding`, a strided conv pads ``k // 2`` on every side
    first (PyTorch's padding) instead of TensorFlow's "same" (one row less at the top/left
    for even sizes), so that ported weights see the same pixels."""
    if not (torch_padding and strides > 1):
        return conv_bn_act(x, filters, kernel_size, name, strides, dilation_rate, activation)
    x = keras.layers.ZeroPadding2D(kernel_size // 2, name=f"{name}_pad")(x)
    x = keras.layers.Conv2D(
        filters, kernel_size, strides=strides, use_bias=False, name=f"{name}_conv"
    )(x)
    x = batch_norm(f"{name}_bn")(x)
    if activation is not None:
        x = keras.layers.Activation(activation, name=f"{name}_{activation}")(x)
    return x


def basic_block(x, filters: int, strides: int, dilation: int, name: str, torch_padding=False):
    """Two 3x3 conv-BN (ReLU between), identity or 1x1 projection shortcut, add, ReLU."""
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = keras.layers.Conv2D(
            filters, 1, strides=strides, use_bias=False, name=f"{name}_downsample_conv"
        )(x)
        shortcut = batch_norm(f"{name}_downsample_bn")(shortcut)
    y = torch_conv_bn_act(
        x, filters, 3, f"{name}_conv1", strides, dilation, torch_padding=torch_padding
    )
    y = conv_bn_act(y, filters, 3, f"{name}_conv2", dilation_rate=dilation, activation=None)
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.Activation("relu", name=f"{name}_relu")(y)


def _shortcut(x, filters: int, strides: int, dilation: int, kernel: int, name, torch_padding):
    """Projection shortcut: 1x1 conv-BN, or SENet-154's 3x3 (dilated like the stage's convs,
    as smp's ``make_dilated`` does)."""
    pad = "same"
    if kernel == 1:
        x, strides = subsample_for_pointwise(x, strides, f"{name}_downsample")
    if kernel > 1 and torch_padding and strides > 1:
        x = keras.layers.ZeroPadding2D(kernel // 2, name=f"{name}_downsample_pad")(x)
        pad = "valid"
    conv = DilatedConv2D if kernel > 1 and dilation > 1 else keras.layers.Conv2D
    x = conv(
        filters,
        kernel,
        strides=strides,
        padding=pad,
        dilation_rate=dilation if kernel > 1 else 1,
        use_bias=False,
        name=f"{name}_downsample_conv",
    )(x)
    return batch_norm(f"{name}_downsample_bn")(x)


def bottleneck_block(
    x,
    planes: int,
    strides: int,
    dilation: int,
    name: str,
    groups: int = 1,
    width_per_group: int = 64,
    torch_padding: bool = False,
    se_reduction: int | None = None,
    stride_on_1x1: bool = False,
    narrow_conv1: bool = False,
    shortcut_kernel: int = 1,
):
    """torchvision's Bottleneck (ResNet v1.5: the stride on the 3x3 conv): 1x1 conv-BN-ReLU
    to ``int(planes * width_per_group / 64) * groups`` channels, a 3x3 conv (in `groups`
    groups: ResNeXt) -BN-ReLU, a 1x1 conv-BN to ``4 * planes``; identity or projection
    shortcut, add, ReLU. SENet's blocks: `se_reduction` squeezes and excites the residual
    before the add; `stride_on_1x1` strides the first 1x1 conv instead (Caffe's SE-ResNet);
    `narrow_conv1` makes the first 1x1 conv half as wide as the 3x3 and `shortcut_kernel` 3
    the projection a 3x3 conv (SENet-154)."""
    width = int(planes * width_per_group / 64) * groups
    filters = 4 * planes
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = _shortcut(x, filters, strides, dilation, shortcut_kernel, name, torch_padding)
    y = conv_bn_act(
        x, width // 2 if narrow_conv1 else width, 1, f"{name}_conv1",
        strides if stride_on_1x1 else 1,
    )  # fmt: skip
    if stride_on_1x1:
        strides = 1
    if torch_padding and strides > 1:
        y = keras.layers.ZeroPadding2D(1, name=f"{name}_conv2_pad")(y)
    # Grouped (ResNeXt): TensorFlow's own grouped kernel, not Keras' XLA detour.
    conv = GroupedConv2D if groups > 1 else DilatedConv2D if dilation != 1 else keras.layers.Conv2D
    y = conv(
        width,
        3,
        strides=strides,
        padding="valid" if torch_padding and strides > 1 else "same",
        dilation_rate=dilation,
        groups=groups,
        use_bias=False,
        name=f"{name}_conv2_conv",
    )(y)
    y = batch_norm(f"{name}_conv2_bn")(y)
    y = keras.layers.Activation("relu", name=f"{name}_conv2_relu")(y)
    y = conv_bn_act(y, filters, 1, f"{name}_conv3", activation=None)
    if se_reduction:
        y = squeeze_excite(y, filters // se_reduction, f"{name}_se")
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.Activation("relu", name=f"{name}_relu")(y)


def stem(x, filters: int, name: str, normalization, torch_padding: bool, deep: bool = False):
    """7x7/2 conv-BN-ReLU, or with `deep` SENet-154's three 3x3 conv-BN-ReLU (stride 2,
    ``filters / 2``, ``filters / 2``, `filters` channels; ``{name}_stem{1,2,3}``), with the
    weights' normalization in front (or, for one input channel, folded into the first conv:
    `zoo.pretrained.adapt_input_kernel`, exact at the zero-padded borders too)."""
    kernel, first = (3, f"{name}_stem1") if deep else (7, f"{name}_stem")
    width = filters // 2 if deep else filters
    channels = int(x.shape[-1])
    if normalization is None or channels != 1:
        if normalization is not None:
            scale, offset = normalization.scale_offset(channels)
            x = ChannelAffine(scale, offset, name=f"{name}_preprocess")(x)
        x = torch_conv_bn_act(x, width, kernel, first, strides=2, torch_padding=torch_padding)
    else:
        image = x
        x = keras.layers.ZeroPadding2D(kernel // 2, name=f"{first}_pad")(x)
        x = keras.layers.Conv2D(width, kernel, strides=2, use_bias=False, name=f"{first}_conv")(x)
        x = FoldedOffset(kernel, strides=2, padding=kernel // 2, name=f"{first}_conv_offset")(
            [x, image]
        )
        x = batch_norm(f"{first}_bn")(x)
        x = keras.layers.Activation("relu", name=f"{first}_relu")(x)
    if deep:
        x = conv_bn_act(x, width, 3, f"{name}_stem2")
        x = conv_bn_act(x, filters, 3, f"{name}_stem3")
    return x
