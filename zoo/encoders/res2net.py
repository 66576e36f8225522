"""Native Res2Net / Res2NeXt encoders (timm's ``res2net50_26w_4s`` ... ``res2next50``,
``res2net50d``, ``res2net101d``), what segmentation_models_pytorch builds for ``tu-res2net*``
and for its older ``timm-res2net*`` / ``timm-res2next50`` names.

timm's ResNet with Res2Net's bottleneck: a 7x7/2 conv-BN-ReLU stem (the ``d`` variants: three
3x3 convs, 32-32-64 channels) and a 3x3/2 max-pool, then four stages of ``Bottle2neck``
blocks. A block's 1x1 conv-BN-ReLU makes ``scale`` groups of ``width`` channels
(``width = floor(planes * base_width / 64) * cardinality``); each group but the last goes
through its own 3x3 conv-BN-ReLU (``cardinality`` groups), from the second on after adding
the previous group's output: the hierarchical, multi-scale residual. The last group passes
unchanged, or, in a stage's first block, through a 3x3 average pool (stride of the block,
zero padding counted, as timm's); the groups are concatenated, a 1x1 conv-BN restores
``4 * planes`` channels, the shortcut (a strided 1x1 conv-BN where the shape changes; in
the ``d`` variants a 2x2 average pool then a 1x1 conv-BN) is added, ReLU. Features: the
stem's ReLU and the four stages, strides 2 ... 32, as timm's. Strided convs and pools pad as
PyTorch does. Output stride 16 or 8 keeps the last stages at that stride as timm does
(stride 1, 3x3 convolutions dilated 2, then 4; a newly dilated stage's first block keeps
the previous rate).

Pretrained weights (`weights` / a model's `encoder_weights`): ``"imagenet"`` (timm's
``in1k`` weights, the authors' ImageNet-1k training, what smp's ``encoder_weights="imagenet"``
downloads) or a local timm or smp checkpoint (an smp model's ``encoder.model.`` part). All
are ImageNet-normalized; the normalization goes inside the graph.

Reference:
    Gao et al., "Res2Net: A New Multi-scale Backbone Architecture", TPAMI 2021.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from zoo.checks import check_positive_ints
from zoo.encoders._common import check_output_stride, native_encoder
from zoo.encoders._resnet_blocks import stem
from zoo.encoders._timm import register_timm_encoder
from zoo.layers import (
    ChannelSplit,
    DilatedConv2D,
    GroupedConv2D,
    batch_norm,
    subsample_for_pointwise,
)

PLANES = (64, 128, 256, 512)
EXPANSION = 4
# timm name -> (blocks per stage, base width, scale, cardinality, deep stem + avg-pool shortcut)
VARIANTS = {
    "res2net50_26w_4s": ((3, 4, 6, 3), 26, 4, 1, False),
    "res2net50_26w_6s": ((3, 4, 6, 3), 26, 6, 1, False),
    "res2net50_26w_8s": ((3, 4, 6, 3), 26, 8, 1, False),
    "res2net50_48w_2s": ((3, 4, 6, 3), 48, 2, 1, False),
    "res2net50_14w_8s": ((3, 4, 6, 3), 14, 8, 1, False),
    "res2net101_26w_4s": ((3, 4, 23, 3), 26, 4, 1, False),
    "res2next50": ((3, 4, 6, 3), 4, 4, 8, False),
    "res2net50d": ((3, 4, 6, 3), 26, 4, 1, True),
    "res2net101d": ((3, 4, 23, 3), 26, 4, 1, True),
}
TINY = {"depths": (1, 1, 1, 1), "planes": (16, 32, 48, 64)}


def _conv_bn(x, filters, kernel, name, strides=1, dilation=1, groups=1, relu=True):
    """A bias-free conv (PyTorch's ``k // 2 * dilation`` padding) -> BN -> ReLU."""
    padding = "same"
    if kernel == 1:  # oneDNN's strided 1x1 gradient breaks on few channels: subsample first
        x, strides = subsample_for_pointwise(x, strides, name)
    if strides > 1 and kernel > 1:
        x = keras.layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
        padding = "valid"
    conv = GroupedConv2D if groups > 1 else DilatedConv2D if dilation > 1 else keras.layers.Conv2D
    x = conv(
        filters, kernel, strides=strides, padding=padding, dilation_rate=dilation,
        groups=groups, use_bias=False, name=f"{name}_conv",
    )(x)  # fmt: skip
    x = batch_norm(f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x) if relu else x


def _shortcut(x, filters, strides, dilation, avg_down, name):
    """timm's projection shortcut: a strided 1x1 conv-BN, or (`avg_down`) a 2x2 average
    pool (ceil mode, padding not counted; at a dilated stage stride 1 with one zero row /
    column after, counted) then a 1x1 conv-BN."""
    if avg_down and strides > 1:
        x = keras.layers.AveragePooling2D(2, strides, padding="same", name=f"{name}_pool")(x)
    elif avg_down and dilation > 1:
        x = keras.layers.ZeroPadding2D(((0, 1), (0, 1)), name=f"{name}_pool_pad")(x)
        x = keras.layers.AveragePooling2D(2, 1, name=f"{name}_pool")(x)
    return _conv_bn(x, filters, 1, name, 1 if avg_down else strides, relu=False)


def bottle2neck(x, planes, base_width, scale, cardinality, strides, dilation, shortcut_dilation,
                project, avg_down, name):  # fmt: skip
    """timm's ``Bottle2neck``: `dilation` is the 3x3 convs' rate, `shortcut_dilation` the
    stage's; `project`: a projection shortcut (the stage's first block). Layers
    ``{name}_{conv1, convs{i}, pool, concat, conv3, downsample, add, relu}``."""
    width = planes * base_width // 64 * cardinality
    first = strides > 1 or project
    y = _conv_bn(x, width * scale, 1, f"{name}_conv1")
    parts = ChannelSplit(scale, name=f"{name}_split")(y)
    outputs, z = [], None
    for i in range(scale - 1):
        z = parts[i] if i == 0 or first else keras.layers.Add(name=f"{name}_sum{i}")([z, parts[i]])
        z = _conv_bn(z, width, 3, f"{name}_convs{i}", strides, dilation, cardinality)
        outputs.append(z)
    last = parts[-1]
    if first:  # PyTorch's AvgPool2d(3, stride, padding=1): the zero padding counts
        last = keras.layers.ZeroPadding2D(1, name=f"{name}_pool_pad")(last)
        last = keras.layers.AveragePooling2D(3, strides, name=f"{name}_pool")(last)
    y = keras.layers.Concatenate(name=f"{name}_concat")([*outputs, last])
    y = _conv_bn(y, planes * EXPANSION, 1, f"{name}_conv3", relu=False)
    shortcut = x
    if project:
        shortcut = _shortcut(
            x, planes * EXPANSION, strides, shortcut_dilation, avg_down, f"{name}_downsample"
        )
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{name}_relu")(y)


def res2net_features(
    x,
    depths: Sequence[int],
    planes: Sequence[int],
    base_width: int,
    scale: int,
    cardinality: int,
    deep: bool,
    output_stride: int = 32,
    name: str = "encoder",
) -> dict:
    """Res2Net feature maps keyed by stride 2 ... 32 (below output stride 32 the deepest
    share a key and the last wins). Layers ``{name}_stem*`` and ``{name}_layer{s}_{b}_*``
    (s from 1, b from 0, as timm's ``layer{s}.{b}``)."""
    x = stem(x, 64, name, None, torch_padding=True, deep=deep)
    features = {2: x}
    # After a ReLU every value is >= 0, so zero padding is max-pool's -inf padding.
    x = keras.layers.ZeroPadding2D(1, name=f"{name}_stem_pool_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name=f"{name}_stem_pool")(x)
    stride, dilation = 4, 1
    for s, (depth, width) in enumerate(zip(depths, planes), 1):
        step, previous = (1 if s == 1 else 2), dilation
        if step > 1 and stride >= output_stride:
            dilation, step = dilation * step, 1
        stride *= step
        for b in range(depth):
            x = bottle2neck(
                x, width, base_width, scale, cardinality, step if b == 0 else 1,
                previous if b == 0 else dilation, dilation, b == 0, deep, f"{name}_layer{s}_{b}",
            )  # fmt: skip
        features[stride] = x
    return features


def encoder_params(depths, planes, base_width: int, scale: int, cardinality: int, deep: bool):
    """Trainable parameters of a Res2Net encoder (stem and stages) from its plan, for 3 input
    channels: what timm and smp count without the head."""
    total = 27 * 32 + 64 + 9 * 32 * 32 + 64 + 9 * 32 * 64 + 128 if deep else 49 * 3 * 64 + 128
    channels = 64
    for depth, p in zip(depths, planes):
        width, out = p * base_width // 64 * cardinality, p * EXPANSION
        for b in range(depth):
            total += channels * width * scale + 2 * width * scale  # conv1
            total += (scale - 1) * (9 * width * width // cardinality + 2 * width)  # convs
            total += width * scale * out + 2 * out  # conv3
            if b == 0:
                total += channels * out + 2 * out
            channels = out
    return total


def _register(key: str) -> None:
    depths, base_width, scale, cardinality, deep = VARIANTS[key]

    def builder(
        inputs=None,
        *,
        input_shape: Sequence[int | None] = (None, None, 3),
        depths: Sequence[int] = depths,
        planes: Sequence[int] = PLANES,
        weights: str | None = None,
        input_normalization: str | None = "weights",
        input_range: Sequence[float] | None = None,
        output_stride: int = 32,
        name: str = "encoder",
    ):
        depths = check_positive_ints("depths", depths, 4)
        planes = check_positive_ints("planes", planes, 4)
        if min(planes) * base_width // 64 < 1:
            raise ValueError(
                f"Invalid value for argument `planes`: each times {base_width} / 64 (the "
                f"width of a scale) must be at least 1. Received: planes={planes!r}"
            )
        check_output_stride(output_stride)
        return native_encoder(
            key, inputs, input_shape, weights, input_normalization, input_range, name,
            lambda x: res2net_features(
                x, depths, planes, base_width, scale, cardinality, deep, output_stride, name
            ),
        )  # fmt: skip

    family = "Res2NeXt" if cardinality > 1 else "Res2Net"
    params = encoder_params(depths, PLANES, base_width, scale, cardinality, deep)
    d = "; deep stem, average-pool shortcuts" if deep else ""
    old = f" / timm-{key}" if not deep else ""
    register_timm_encoder(
        key,
        builder,
        description=(
            f"{family}-{sum(depths) * 3 + 2} (timm's {key}, smp's tu-{key}{old}; {scale} scales "
            f"of width {base_width}{f' x {cardinality} groups' if cardinality > 1 else ''}{d}), "
            f"{params / 1e6:.1f}M params; timm's weights imagenet (= in1k)."
        ),
        args=(
            "    depths: blocks of the four stages.\n"
            "    planes: the stages' bottleneck planes (outputs: 4x; 64, 128, 256, 512).\n"
        ),
        tiny_config=TINY,
        table="res2net_d" if deep else "res2net",
        first_conv="conv1.0" if deep else "conv1",
        tags=("in1k",),
        license=lambda tag: "not stated (timm lists it as unknown)",
    )


for _key in VARIANTS:
    _register(_key)
