"""Native RegNetX / RegNetY encoders (timm's ``regnetx_002`` ... ``regnety_320``), what
segmentation_models_pytorch builds for ``tu-regnet*`` and its older ``timm-regnet*`` names.

A 3x3 stride-2 conv-BN-ReLU stem (32 channels) and four stages of bottleneck blocks with a
bottleneck ratio of 1: a 1x1 conv-BN-ReLU, a grouped 3x3 conv-BN-ReLU (stride 2 in a stage's
first block; `group_width` channels per group), in RegNetY a squeeze-and-excitation whose
width is a quarter of the block's *input* channels, a 1x1 conv-BN, then the shortcut (a
1x1 conv-BN where the shape changes), add, ReLU. Features are the stem's and the stages'
outputs at strides 2-32. Stage widths, depths and group widths are timm's (generated from
its quantized linear width rule; `VARIANTS` holds the result), so parameter counts equal
timm's without the classifier and smp's. Strided convolutions pad as PyTorch does, so
ported weights see the same pixels. Output stride 16 or 8 keeps the last stages at that
stride as timm does (stride 1, their 3x3 convolutions dilated 2, then 4).

Pretrained weights (`weights` / a model's `encoder_weights`): ``"imagenet"`` (timm's default
weights of the variant, what smp's ``encoder_weights="imagenet"`` downloads), a timm tag
(``"pycls_in1k"``, ``"tv2_in1k"``, ...; `zoo.pretrained.sources(name)` lists them) or a local
timm or smp checkpoint (an smp model's ``encoder.model.`` or older ``encoder.`` part). All are
ImageNet-normalized; the normalization goes inside the graph.

Reference:
    Radosavovic et al., "Designing Network Design Spaces", CVPR 2020.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from zoo.checks import check_positive_ints
from zoo.encoders._common import check_output_stride, native_encoder
from zoo.encoders._timm import TIMM_LICENSE, register_timm_encoder
from zoo.layers import (
    DilatedConv2D,
    GroupedConv2D,
    batch_norm,
    squeeze_excite,
    subsample_for_pointwise,
)

STEM_WIDTH = 32
SE_RATIO = 0.25
# timm name -> (stage widths, stage depths, group widths, squeeze-and-excitation), as timm
# 1.0 generates them, and timm's default pretrained tag then its other ImageNet tags.
VARIANTS = {
    "regnetx_002": ((24, 56, 152, 368), (1, 1, 4, 7), (8, 8, 8, 8), False),
    "regnetx_004": ((32, 64, 160, 384), (1, 2, 7, 12), (16, 16, 16, 16), False),
    "regnetx_006": ((48, 96, 240, 528), (1, 3, 5, 7), (24, 24, 24, 24), False),
    "regnetx_008": ((64, 128, 288, 672), (1, 3, 7, 5), (16, 16, 16, 16), False),
    "regnetx_016": ((72, 168, 408, 912), (2, 4, 10, 2), (24, 24, 24, 24), False),
    "regnetx_032": ((96, 192, 432, 1008), (2, 6, 15, 2), (48, 48, 48, 48), False),
    "regnetx_040": ((80, 240, 560, 1360), (2, 5, 14, 2), (40, 40, 40, 40), False),
    "regnetx_064": ((168, 392, 784, 1624), (2, 4, 10, 1), (56, 56, 56, 56), False),
    "regnetx_080": ((80, 240, 720, 1920), (2, 5, 15, 1), (80, 120, 120, 120), False),
    "regnetx_120": ((224, 448, 896, 2240), (2, 5, 11, 1), (112, 112, 112, 112), False),
    "regnetx_160": ((256, 512, 896, 2048), (2, 6, 13, 1), (128, 128, 128, 128), False),
    "regnetx_320": ((336, 672, 1344, 2520), (2, 7, 13, 1), (168, 168, 168, 168), False),
    "regnety_002": ((24, 56, 152, 368), (1, 1, 4, 7), (8, 8, 8, 8), True),
    "regnety_004": ((48, 104, 208, 440), (1, 3, 6, 6), (8, 8, 8, 8), True),
    "regnety_006": ((48, 112, 256, 608), (1, 3, 7, 4), (16, 16, 16, 16), True),
    "regnety_008": ((64, 128, 320, 768), (1, 3, 8, 2), (16, 16, 16, 16), True),
    "regnety_016": ((48, 120, 336, 888), (2, 6, 17, 2), (24, 24, 24, 24), True),
    "regnety_032": ((72, 216, 576, 1512), (2, 5, 13, 1), (24, 24, 24, 24), True),
    "regnety_040": ((128, 192, 512, 1088), (2, 6, 12, 2), (64, 64, 64, 64), True),
    "regnety_064": ((144, 288, 576, 1296), (2, 7, 14, 2), (72, 72, 72, 72), True),
    "regnety_080": ((168, 448, 896, 2016), (2, 4, 10, 1), (56, 56, 56, 56), True),
    "regnety_120": ((224, 448, 896, 2240), (2, 5, 11, 1), (112, 112, 112, 112), True),
    "regnety_160": ((224, 448, 1232, 3024), (2, 4, 11, 1), (112, 112, 112, 112), True),
    "regnety_320": ((232, 696, 1392, 3712), (2, 5, 12, 1), (232, 232, 232, 232), True),
}
_TV2, _PYCLS = "tv2_in1k", "pycls_in1k"
TAGS = {  # default first
    **{k: (_PYCLS,) for k in ("regnetx_002", "regnetx_004", "regnetx_006", "regnetx_040")},
    **{k: (_PYCLS,) for k in ("regnetx_064", "regnetx_120", "regnety_002", "regnety_006")},
    **{k: (_TV2, _PYCLS) for k in ("regnetx_008", "regnetx_016", "regnetx_032", "regnetx_080")},
    **{k: (_TV2, _PYCLS) for k in ("regnetx_160", "regnetx_320", "regnety_004", "regnety_016")},
    "regnety_008": (_PYCLS,),
    "regnety_032": ("ra_in1k", _PYCLS, _TV2),
    "regnety_040": ("ra3_in1k", _PYCLS),
    "regnety_064": ("ra3_in1k", _PYCLS),
    "regnety_080": ("ra3_in1k", _PYCLS),
    "regnety_120": ("sw_in12k_ft_in1k", _PYCLS, "sw_in12k"),
    "regnety_160": (
        "sw_in12k_ft_in1k", "deit_in1k", "lion_in12k_ft_in1k", _PYCLS, "sw_in12k", _TV2,
    ),
    "regnety_320": (_TV2, _PYCLS),
}  # fmt: skip
LICENSES = {_PYCLS: "MIT (pycls)", _TV2: "BSD-3-Clause (torchvision)"}
TINY = {"widths": (8, 16, 24, 32), "depths": (1, 2, 1, 1), "group_widths": (8, 8, 8, 8)}


def _conv(x, filters: int, kernel: int, name: str, strides=1, dilation=1, groups=1):
    """A bias-free conv padded as PyTorch's ``padding=kernel // 2 * dilation``."""
    padding = "same"
    if kernel == 1:  # oneDNN's strided 1x1 gradient breaks on few channels: subsample first
        x, strides = subsample_for_pointwise(x, strides, name)
    if strides > 1:
        if kernel > 1:
            x = keras.layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
        padding = "valid"  # a strided 1x1 conv: pixels 0, 2, 4, ... as PyTorch's
    dilation = dilation if kernel > 1 else 1
    conv = GroupedConv2D if groups > 1 else DilatedConv2D if dilation > 1 else keras.layers.Conv2D
    return conv(
        filters,
        kernel,
        strides=strides,
        padding=padding,
        dilation_rate=dilation,
        groups=groups,
        use_bias=False,
        name=f"{name}_conv",
    )(x)


def _conv_bn(x, filters, kernel, name, strides=1, dilation=1, groups=1, relu=True):
    x = _conv(x, filters, kernel, name, strides, dilation, groups)
    x = batch_norm(f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x) if relu else x


def regnet_block(x, width, group_width, strides, dilation, shortcut_dilation, se, name):
    """timm's RegNet ``Bottleneck`` (bottleneck ratio 1). `dilation` is the 3x3 conv's; a
    block whose `shortcut_dilation` differs (the first of a newly dilated stage) gets a
    projection shortcut, as in timm."""
    channels = int(x.shape[-1])
    y = _conv_bn(x, width, 1, f"{name}_conv1")
    y = _conv_bn(y, width, 3, f"{name}_conv2", strides, dilation, width // group_width)
    if se:
        y = squeeze_excite(y, int(round(channels * SE_RATIO)), f"{name}_se")
    y = _conv_bn(y, width, 1, f"{name}_conv3", relu=False)
    shortcut = x
    if channels != width or strides != 1 or dilation != shortcut_dilation:
        shortcut = _conv_bn(x, width, 1, f"{name}_downsample", strides, relu=False)
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{name}_relu")(y)


def regnet_features(
    x,
    widths: Sequence[int],
    depths: Sequence[int],
    group_widths: Sequence[int],
    se: bool,
    output_stride: int = 32,
    name: str = "encoder",
) -> dict:
    """RegNet feature maps keyed by stride 2 ... 32 (real strides: below output stride 32
    the deepest share a key and the last wins). Layers ``{name}_stem_{conv, bn, relu}`` and
    ``{name}_s{s}_b{b}_{conv1, conv2, se, conv3, downsample, add, relu}`` (s, b from 1, as
    timm's ``s{s}.b{b}``)."""
    x = _conv_bn(x, STEM_WIDTH, 3, f"{name}_stem", strides=2)
    features, stride, dilation = {2: x}, 2, 1
    for s, (width, depth, group_width) in enumerate(zip(widths, depths, group_widths), 1):
        step = 2
        if stride >= output_stride:
            dilation, step = dilation * 2, 1
        stride *= step
        first = 1 if dilation in (1, 2) else 2  # timm: the first block keeps half the rate
        for b in range(1, depth + 1):
            x = regnet_block(
                x,
                width,
                group_width,
                step if b == 1 else 1,
                first if b == 1 else dilation,
                dilation,
                se,
                f"{name}_s{s}_b{b}",
            )
        features[stride] = x
    return features


def _regnet(encoder, inputs, input_shape, widths, depths, group_widths, se, weights,
            input_normalization, input_range, output_stride, name):  # fmt: skip
    widths = check_positive_ints("widths", widths, 4)
    depths = check_positive_ints("depths", depths, 4)
    group_widths = check_positive_ints("group_widths", group_widths, 4)
    bad = [(w, g) for w, g in zip(widths, group_widths) if w % g]
    if bad:
        raise ValueError(
            "Invalid value for argument `group_widths`: each must divide its stage's width "
            f"({list(widths)}). Received: group_widths={group_widths!r}"
        )
    check_output_stride(output_stride)
    return native_encoder(
        encoder,
        inputs,
        input_shape,
        weights,
        input_normalization,
        input_range,
        name,
        lambda x: regnet_features(x, widths, depths, group_widths, se, output_stride, name),
    )


def encoder_params(widths, depths, group_widths, se: bool) -> int:
    """Trainable parameters of a RegNet encoder (stem and stages) from its plan, for 3 input
    channels: what timm and smp count without the head."""
    total = 27 * STEM_WIDTH + 2 * STEM_WIDTH
    channels = STEM_WIDTH
    for width, depth, group_width in zip(widths, depths, group_widths):
        for b in range(depth):
            block = channels * width + 9 * width * group_width + width * width + 6 * width
            if se:
                reduced = int(round(channels * SE_RATIO))
                block += 2 * width * reduced + reduced + width
            if b == 0:
                block += channels * width + 2 * width  # projection shortcut
            total += block
            channels = width
    return total


def _register(key: str) -> None:
    widths, depths, group_widths, se = VARIANTS[key]

    def builder(
        inputs=None,
        *,
        input_shape: Sequence[int | None] = (None, None, 3),
        widths: Sequence[int] = widths,
        depths: Sequence[int] = depths,
        group_widths: Sequence[int] = group_widths,
        weights: str | None = None,
        input_normalization: str | None = "weights",
        input_range: Sequence[float] | None = None,
        output_stride: int = 32,
        name: str = "encoder",
    ):
        return _regnet(key, inputs, input_shape, widths, depths, group_widths, se, weights,
                       input_normalization, input_range, output_stride, name)  # fmt: skip

    tags = TAGS[key]
    params = encoder_params(widths, depths, group_widths, se)
    family = "RegNetY" if se else "RegNetX"
    flops = f"{int(key.split('_')[1]) / 10:g}GF"
    register_timm_encoder(
        key,
        builder,
        description=(
            f"{family}-{flops} (timm's {key}, smp's tu-{key} / timm-{key}; widths "
            f"{list(widths)}, depths {list(depths)}), {params / 1e6:.1f}M params; timm's "
            f"weights imagenet (= {tags[0]}){''.join(', ' + t for t in sorted(tags[1:]))}."
        ),
        args=(
            "    widths, depths: channels and blocks of the four stages.\n"
            "    group_widths: channels per group of each stage's 3x3 convolutions.\n"
        ),
        tiny_config=TINY,
        table="regnet",
        first_conv="stem.conv",
        tags=tags,
        license=lambda tag: LICENSES.get(tag, TIMM_LICENSE),
    )


for _key in VARIANTS:
    _register(_key)
