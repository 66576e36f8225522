"""Native ResNeSt encoders (timm's ``resnest14d`` ... ``resnest269e``, ``resnest50d_4s2x40d``,
``resnest50d_1s4x24d``), what segmentation_models_pytorch builds for ``tu-resnest*`` and its
older ``timm-resnest*`` names.

timm's ResNet with ResNet-D tricks and split-attention bottlenecks: a deep stem (three 3x3
conv-BN-ReLU, the first with stride 2: `stem_width`, `stem_width`, ``2 * stem_width``
channels; the stride-2 feature) and a 3x3/2 max-pool, then four stages of bottlenecks (1x1
conv-BN-ReLU to ``int(planes * base_width / 64) * cardinality`` channels, a split-attention
3x3 conv, a 1x1 conv-BN to ``4 * planes``). A split-attention conv ("Splat") is a 3x3 conv
to `radix` times the channels in ``cardinality * radix`` groups, BN, ReLU; the `radix`
splits are summed, pooled globally and mapped through a grouped 1x1 conv-BN-ReLU (to a
quarter of ``radix`` times the channels, a multiple of 8, at least 32) and a grouped 1x1
conv to one logit per split and channel; a softmax over the splits (a sigmoid gate for radix
1) weights the splits' sum. A stage's stride is a 3x3/2 average pool (zeros counted) after
the split-attention conv (before it with ``avd_first``); the projection shortcut is a 2x2/2
average pool (a partial window at an odd edge averages what it covers), 1x1 conv, BN.

Every stride pads as PyTorch does, so ported weights see the same pixels. Output stride 16
or 8 keeps the last stages at that stride as timm does: no average pools, 3x3 convs dilated 2
(then 4; a stage's first block keeps the previous rate), and the shortcut's pool a 2x2 of
stride 1 over a map zero-padded at the bottom / right (timm's ``AvgPool2dSame``).

Pretrained weights (`weights` / a model's `encoder_weights`): ``"imagenet"`` (timm's weights
of the variant, what smp's ``encoder_weights="imagenet"`` downloads), timm's tag (``"in1k"``,
``"gluon_in1k"``) or a local timm or smp checkpoint (an smp model's ``encoder.model.`` part,
or ``encoder.`` of older files). All are ImageNet-normalized; the normalization goes inside
the graph.

Reference:
    Zhang et al., "ResNeSt: Split-Attention Networks", 2020 (arXiv:2004.08955).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from zoo.checks import check_positive_int, check_positive_ints
from zoo.encoders._common import check_output_stride, native_encoder
from zoo.encoders._timm import register_timm_encoder
from zoo.layers import (
    ChannelSplit,
    DilatedConv2D,
    GroupedConv2D,
    SelectiveKernelAttention,
    batch_norm,
)

PLANES = (64, 128, 256, 512)
# timm name -> (blocks per stage, stem width, base width, cardinality, radix, avd_first, timm's
# (only) ImageNet tag, parameters in millions without the classifier).
VARIANTS = {
    "resnest14d": ((1, 1, 1, 1), 32, 64, 1, 2, False, "gluon_in1k", 8.6),
    "resnest26d": ((2, 2, 2, 2), 32, 64, 1, 2, False, "gluon_in1k", 15.0),
    "resnest50d": ((3, 4, 6, 3), 32, 64, 1, 2, False, "in1k", 25.4),
    "resnest101e": ((3, 4, 23, 3), 64, 64, 1, 2, False, "in1k", 46.2),
    "resnest200e": ((3, 24, 36, 3), 64, 64, 1, 2, False, "in1k", 68.2),
    "resnest269e": ((3, 30, 48, 8), 64, 64, 1, 2, False, "in1k", 108.9),
    "resnest50d_4s2x40d": ((3, 4, 6, 3), 32, 40, 2, 4, True, "in1k", 28.4),
    "resnest50d_1s4x24d": ((3, 4, 6, 3), 32, 24, 4, 1, True, "in1k", 23.6),
}
TINY = {"widths": (8, 16, 16, 32), "depths": (1, 1, 1, 1), "stem_width": 8, "base_width": 64}


def attention_channels(width: int, radix: int) -> int:
    """Channels of a split attention's bottleneck: ``width * radix / 4`` rounded to a
    multiple of 8 (one more 8 if rounding down lost over 10%), at least 32 (timm's
    ``make_divisible(..., min_value=32)``)."""
    value = width * radix / 4
    rounded = max(32, int(value + 4) // 8 * 8)
    return rounded + 8 if rounded < 0.9 * value else rounded


def _conv(x, filters: int, kernel: int, name: str, strides=1, dilation=1, groups=1, bias=False):
    """Conv layer `name`, padded as PyTorch's ``padding=dilation * (kernel // 2)``: "same" at
    stride 1, explicit symmetric zeros before a strided one (TensorFlow's "same" pads the
    bottom / right only)."""
    padding = "same"
    if strides > 1 and kernel > 1:
        x = keras.layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
        padding = "valid"
    dilation = dilation if kernel > 1 else 1
    # Grouped: TensorFlow's own grouped kernel, not Keras' XLA detour (zoo.layers).
    conv = GroupedConv2D if groups > 1 else DilatedConv2D if dilation > 1 else keras.layers.Conv2D
    return conv(
        filters, kernel, strides=strides, padding=padding, dilation_rate=dilation,
        groups=groups, use_bias=bias, name=name,
    )(x)  # fmt: skip


def _conv_bn(x, filters: int, kernel: int, name: str, strides=1, relu=True):
    x = _conv(x, filters, kernel, f"{name}_conv", strides)
    x = batch_norm(f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x) if relu else x


def split_attention(x, width: int, dilation: int, cardinality: int, radix: int, name: str):
    """timm's ``SplitAttn`` (stride 1: the block's average pool strides): `width` output
    channels. Layers ``{name}_{conv, bn0, relu0, split, sum, pool, fc1, bn1, relu1, fc2}``
    and the softmax over the splits ``{name}_attn`` (radix 1: a sigmoid gate)."""
    y = _conv(x, width * radix, 3, f"{name}_conv", dilation=dilation, groups=cardinality * radix)
    y = batch_norm(f"{name}_bn0")(y)
    y = keras.layers.ReLU(name=f"{name}_relu0")(y)
    splits = [y]
    if radix > 1:  # split r: channels [r * width, (r + 1) * width)
        splits = ChannelSplit(radix, name=f"{name}_split")(y)
        a = keras.layers.Add(name=f"{name}_sum")(splits)
    else:
        a = y
    a = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_pool")(a)
    a = _conv(a, attention_channels(width, radix), 1, f"{name}_fc1", groups=cardinality, bias=True)
    a = batch_norm(f"{name}_bn1")(a)
    a = keras.layers.ReLU(name=f"{name}_relu1")(a)
    a = _conv(a, width * radix, 1, f"{name}_fc2", groups=cardinality, bias=True)
    if radix == 1:
        a = keras.layers.Activation("sigmoid", name=f"{name}_gate")(a)
        return keras.layers.Multiply(name=f"{name}_attn")([y, a])
    if cardinality > 1:
        # fc2's logits come group-major (group, split, channel in group), the splits
        # split-major: reorder the logits as timm's rSoftMax does (view, transpose(1, 2)).
        per_group = width // cardinality
        a = keras.layers.Reshape((cardinality, radix, per_group), name=f"{name}_logits_grouped")(a)
        a = keras.layers.Permute((2, 1, 3), name=f"{name}_logits_permute")(a)
        a = keras.layers.Reshape((1, 1, radix * width), name=f"{name}_logits")(a)
    return SelectiveKernelAttention(radix, name=f"{name}_attn")([a, *splits])


def _average_pool(x, name: str, strides: int):
    """timm's ``avd`` pool: 3x3, stride `strides`, PyTorch's padding 1 with zeros counted."""
    x = keras.layers.ZeroPadding2D(1, name=f"{name}_pad")(x)
    return keras.layers.AveragePooling2D(3, strides=strides, name=f"{name}_pool")(x)


def _downsample(x, filters: int, strides: int, dilation: int, name: str):
    """timm's ``downsample_avg``: pool (below), 1x1 conv, BN. Stride 2: 2x2/2 with
    ``ceil_mode`` and padding left out of the count, which is TensorFlow's "same" average
    pool; a dilated stage: 2x2/1 over zeros padded at the bottom / right (counted)."""
    if dilation > 1:
        x = keras.layers.ZeroPadding2D(((0, 1), (0, 1)), name=f"{name}_downsample_pad")(x)
        x = keras.layers.AveragePooling2D(2, strides=1, name=f"{name}_downsample_pool")(x)
    elif strides > 1:
        x = keras.layers.AveragePooling2D(
            2, strides=strides, padding="same", name=f"{name}_downsample_pool"
        )(x)
    return _conv_bn(x, filters, 1, f"{name}_downsample", relu=False)


def resnest_block(
    x, planes: int, strides: int, dilation: int, first_dilation: int, name: str,
    base_width: int, cardinality: int, radix: int, avd_first: bool,
):  # fmt: skip
    """timm's ``ResNestBottleneck`` with ``avd``: `dilation` is the stage's (it decides the
    shortcut's pool), `first_dilation` the split-attention conv's."""
    width = int(planes * base_width / 64) * cardinality
    filters = 4 * planes
    y = _conv_bn(x, width, 1, f"{name}_conv1")
    if strides > 1 and avd_first:
        y = _average_pool(y, f"{name}_avd", strides)
    y = split_attention(y, width, first_dilation, cardinality, radix, f"{name}_conv2")
    if strides > 1 and not avd_first:
        y = _average_pool(y, f"{name}_avd", strides)
    y = _conv_bn(y, filters, 1, f"{name}_conv3", relu=False)
    shortcut = x
    if strides != 1 or int(x.shape[-1]) != filters:
        shortcut = _downsample(x, filters, strides, dilation, name)
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{name}_relu")(y)


def resnest_features(
    x,
    widths: Sequence[int],
    depths: Sequence[int],
    stem_width: int,
    base_width: int,
    cardinality: int,
    radix: int,
    avd_first: bool,
    output_stride: int = 32,
    name: str = "encoder",
) -> dict:
    """ResNeSt feature maps keyed by stride 2 ... 32 (below output stride 32 the deepest
    share a key and the last wins). Layers ``{name}_stem{1,2}_{conv, bn, relu}``,
    ``{name}_stem3_conv``, ``{name}_stem_{bn, relu, pool}`` and ``{name}_stage{s}_block{b}_
    {conv1, avd, conv2, conv3, downsample, add, relu}`` (s, b from 1)."""
    x = _conv_bn(x, stem_width, 3, f"{name}_stem1", strides=2)
    x = _conv_bn(x, stem_width, 3, f"{name}_stem2")
    x = _conv(x, 2 * stem_width, 3, f"{name}_stem3_conv")
    x = batch_norm(f"{name}_stem_bn")(x)
    x = keras.layers.ReLU(name=f"{name}_stem_relu")(x)
    features = {2: x}
    # After a ReLU every value is >= 0, so zero padding is max-pool's -inf padding.
    x = keras.layers.ZeroPadding2D(1, name=f"{name}_stem_pool_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name=f"{name}_stem_pool")(x)
    stride, dilation = 4, 1
    for s, (planes, depth) in enumerate(zip(widths, depths), 1):
        step, first = (1 if s == 1 else 2), dilation
        if stride * step > output_stride:
            dilation, step = dilation * step, 1  # timm: keep the stride, dilate instead
        stride *= step
        for b in range(1, depth + 1):
            x = resnest_block(
                x, planes, step if b == 1 else 1, dilation, first if b == 1 else dilation,
                f"{name}_stage{s}_block{b}", base_width, cardinality, radix, avd_first,
            )  # fmt: skip
        features[stride] = x
    return features


def _check_widths(widths, base_width: int, cardinality: int, radix: int) -> None:
    """Each split-attention conv needs whole groups: ``cardinality * radix`` must divide its
    input (``int(planes * base_width / 64) * cardinality``) and `cardinality` its bottleneck."""
    for s, planes in enumerate(widths, 1):
        per_group = int(planes * base_width / 64)
        width = per_group * cardinality
        if (
            per_group < 1
            or width % (cardinality * radix)
            or (attention_channels(width, radix) % cardinality)
        ):
            raise ValueError(
                "Invalid value for argument `widths` / `base_width` / `cardinality` / `radix`:"
                f" stage {s}'s split attention has {width} channels, which {cardinality} x "
                f"{radix} groups must divide. Received: widths={tuple(widths)}, base_width="
                f"{base_width}, cardinality={cardinality}, radix={radix}"
            )


def _resnest(encoder, inputs, input_shape, widths, depths, stem_width, base_width, cardinality,
             radix, weights, input_normalization, input_range, output_stride, name):  # fmt: skip
    widths = check_positive_ints("widths", widths, 4)
    depths = check_positive_ints("depths", depths, 4)
    for key, value in (
        ("stem_width", stem_width),
        ("base_width", base_width),
        ("cardinality", cardinality),
        ("radix", radix),
    ):
        check_positive_int(key, value)
    _check_widths(widths, base_width, cardinality, radix)
    check_output_stride(output_stride)
    avd_first = VARIANTS[encoder][5]
    return native_encoder(
        encoder, inputs, input_shape, weights, input_normalization, input_range, name,
        lambda x: resnest_features(
            x, widths, depths, stem_width, base_width, cardinality, radix, avd_first,
            output_stride, name,
        ),
    )  # fmt: skip


def _register(key: str) -> None:
    depths, stem_width, base_width, cardinality, radix, avd_first, tag, millions = VARIANTS[key]

    def builder(
        inputs=None,
        *,
        input_shape: Sequence[int | None] = (None, None, 3),
        widths: Sequence[int] = PLANES,
        depths: Sequence[int] = depths,
        stem_width: int = stem_width,
        base_width: int = base_width,
        cardinality: int = cardinality,
        radix: int = radix,
        weights: str | None = None,
        input_normalization: str | None = "weights",
        input_range: Sequence[float] | None = None,
        output_stride: int = 32,
        name: str = "encoder",
    ):
        return _resnest(key, inputs, input_shape, widths, depths, stem_width, base_width,
                        cardinality, radix, weights, input_normalization, input_range,
                        output_stride, name)  # fmt: skip

    register_timm_encoder(
        key,
        builder,
        description=(
            f"ResNeSt (timm's {key}, smp's tu-{key} / timm-{key}; blocks {list(depths)}, "
            f"radix {radix}, {cardinality}x{base_width}d, stem width {stem_width}), "
            f"{millions}M params; timm's weights imagenet (= {tag})."
        ),
        args=(
            "    widths: planes of the four stages (their outputs have 4x the channels).\n"
            "    depths: blocks of the four stages.\n"
            "    stem_width: channels of the first two stem convs (the third has twice).\n"
            "    base_width, cardinality: the split-attention convs have\n"
            "        ``int(planes * base_width / 64) * cardinality`` channels, in `cardinality`\n"
            "        groups per split.\n"
            "    radix: splits of each split-attention conv (1: a sigmoid gate).\n"
        ),
        tiny_config=TINY,
        table="resnest",
        first_conv="conv1.0",
        tags=(tag,),
    )


for _key in VARIANTS:
    _register(_key)
