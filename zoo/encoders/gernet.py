"""Native GENet ("GPU-efficient networks") encoders, timm's ``gernet_s``, ``gernet_m`` and
``gernet_l``: what segmentation_models_pytorch builds for ``tu-gernet_*`` and for its older
``timm-gernet_*`` names.

timm's ByobNet configuration of the paper's networks: a 3x3 stride-2 conv-BN-ReLU stem, two
stages of basic blocks (3x3 conv-BN-ReLU, 3x3 conv-BN), one of bottlenecks (1x1, 3x3,
1x1; a quarter of the output width inside), two of inverted bottlenecks with depthwise 3x3
convolutions (three times the width inside), each block adding its shortcut (a strided
1x1 conv-BN where the shape changes) before a ReLU; then a 1x1 conv-BN-ReLU to 1920 / 2560
channels. Features: the stem and stages 1-3 at strides 2-16, the final conv at 32 (stages
4 and 5 share stride 32). Strided convolutions pad as PyTorch does. Output stride 16 or 8
keeps the last stages at that stride as timm does (stride 1, 3x3 convolutions dilated; a
newly dilated stage's first block keeps half the rate).

Pretrained weights (`weights` / a model's `encoder_weights`): ``"imagenet"`` (timm's
``idstcv_in1k``, the authors' ImageNet-1k weights, what smp's ``encoder_weights="imagenet"``
downloads) or a local timm or smp checkpoint (an smp model's ``encoder.model.`` part).
ImageNet-normalized; the normalization goes inside the graph.

Reference:
    Lin et al., "Neural Architecture Design for GPU-Efficient Networks", arXiv:2006.14090.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import keras

from zoo.checks import check_positive_ints
from zoo.encoders import _timm
from zoo.encoders._common import check_output_stride, native_encoder
from zoo.encoders._timm import register_timm_encoder
from zoo.layers import DilatedConv2D, batch_norm, subsample_for_pointwise

KINDS = ("basic", "basic", "bottle", "inverted", "inverted")
RATIOS = {"basic": 1.0, "bottle": 0.25, "inverted": 3.0}
STRIDES = (2, 2, 2, 2, 1)
# timm name -> (stem channels, stage channels, stage depths, final conv channels)
VARIANTS = {
    "gernet_s": (13, (48, 48, 384, 560, 256), (1, 3, 7, 2, 1), 1920),
    "gernet_m": (32, (128, 192, 640, 640, 640), (1, 2, 6, 4, 1), 2560),
    "gernet_l": (32, (128, 192, 640, 640, 640), (1, 2, 6, 5, 4), 2560),
}
TINY = {
    "stem_width": 8,
    "widths": (8, 8, 16, 16, 16),
    "depths": (1, 1, 1, 1, 1),
    "num_features": 32,
}


def _conv_bn(x, filters, kernel, name, strides=1, dilation=1, depthwise=False, relu=True):
    """A bias-free conv (PyTorch's ``k // 2 * dilation`` padding) -> BN (-> ReLU)."""
    padding = "same"
    if kernel == 1:  # oneDNN's strided 1x1 gradient breaks on few channels: subsample first
        x, strides = subsample_for_pointwise(x, strides, name)
    if strides > 1 and kernel > 1:
        x = keras.layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
        padding = "valid"
    kwargs = dict(strides=strides, padding=padding, use_bias=False, name=f"{name}_conv")
    if depthwise:
        x = keras.layers.DepthwiseConv2D(kernel, dilation_rate=dilation, **kwargs)(x)
    else:
        conv = DilatedConv2D if dilation > 1 else keras.layers.Conv2D
        x = conv(filters, kernel, dilation_rate=dilation, **kwargs)(x)
    x = batch_norm(f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x) if relu else x


def gernet_block(x, kind: str, filters: int, strides: int, dilations: tuple[int, int], name):
    """timm's ByobNet ``BasicBlock`` (`kind` "basic") or ``BottleneckBlock`` ("bottle";
    "inverted": its depthwise form). `dilations`: the first and the other 3x3 convs' rates.
    Layers ``{name}_{shortcut, conv1_kxk, conv2_kxk | conv1_1x1, conv2_kxk, conv3_1x1}``."""
    channels = int(x.shape[-1])
    mid = _divisible(filters * RATIOS[kind])
    if kind == "basic":
        y = _conv_bn(x, mid, 3, f"{name}_conv1_kxk", strides, dilations[0])
        y = _conv_bn(y, filters, 3, f"{name}_conv2_kxk", dilation=dilations[1], relu=False)
    else:
        y = _conv_bn(x, mid, 1, f"{name}_conv1_1x1")
        y = _conv_bn(y, mid, 3, f"{name}_conv2_kxk", strides, dilations[0], kind == "inverted")
        y = _conv_bn(y, filters, 1, f"{name}_conv3_1x1", relu=False)
    shortcut = x
    if channels != filters or strides != 1 or dilations[0] != dilations[1]:
        shortcut = _conv_bn(x, filters, 1, f"{name}_shortcut", strides, relu=False)
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{name}_relu")(y)


def _divisible(v: float, divisor: int = 8) -> int:
    """timm's make_divisible: the nearest multiple of 8, at least 8, never 10% below."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def gernet_features(x, stem_width, widths, depths, num_features, output_stride=32, name="encoder"):
    """GENet feature maps keyed by stride 2 ... 32 (below output stride 32 the deepest share
    a key and the last wins). Layers ``{name}_stem_*``, ``{name}_stages{s}_{b}_*`` (s, b
    from 0, as timm's ``stages.{s}.{b}``) and ``{name}_final_conv_*``."""
    x = _conv_bn(x, stem_width, 3, f"{name}_stem", strides=2)
    features, stride, dilation = {2: x}, 2, 1
    for s, (kind, width, depth, step) in enumerate(zip(KINDS, widths, depths, STRIDES)):
        if step > 1:
            features[stride] = x  # the previous stage ends a resolution
            if stride >= output_stride:
                dilation, step = dilation * step, 1
        stride *= step
        first = 1 if dilation in (1, 2) else 2  # timm: the first block keeps half the rate
        for b in range(depth):
            rates = (first if b == 0 else dilation, dilation)
            x = gernet_block(x, kind, width, step if b == 0 else 1, rates, f"{name}_stages{s}_{b}")
    features[stride] = _conv_bn(x, num_features, 1, f"{name}_final_conv")
    return features


def encoder_params(stem_width, widths, depths, num_features) -> int:
    """Trainable parameters of a GENet encoder (stem, stages, final conv) from its plan, for
    3 input channels: what timm and smp count without the head."""
    total, channels = 27 * stem_width + 2 * stem_width, stem_width
    for s, (kind, width, depth) in enumerate(zip(KINDS, widths, depths)):
        mid = _divisible(width * RATIOS[kind])
        for b in range(depth):
            if kind == "basic":
                total += 9 * channels * mid + 2 * mid + 9 * mid * width + 2 * width
            else:
                inner = 9 * mid if kind == "inverted" else 9 * mid * mid
                total += channels * mid + inner + mid * width + 4 * mid + 2 * width
            if channels != width or (b == 0 and STRIDES[s] > 1):
                total += channels * width + 2 * width
            channels = width
    return total + channels * num_features + 2 * num_features


def smp_to_timm_key(key: str) -> str:
    """An smp ``tu-gernet_*`` key as timm's checkpoint names it: smp's ``encoder.`` kept, its
    ``model.`` dropped, timm's feature wrapper's ``stages_{s}`` back to ``stages.{s}``."""
    return _STAGES.sub(r"\1stages.\2", _timm.smp_to_timm_key(key))


_STAGES = re.compile(r"(^|\.)stages_(\d)")


def _register(key: str) -> None:
    stem_width, widths, depths, num_features = VARIANTS[key]

    def builder(
        inputs=None,
        *,
        input_shape: Sequence[int | None] = (None, None, 3),
        stem_width: int = stem_width,
        widths: Sequence[int] = widths,
        depths: Sequence[int] = depths,
        num_features: int = num_features,
        weights: str | None = None,
        input_normalization: str | None = "weights",
        input_range: Sequence[float] | None = None,
        output_stride: int = 32,
        name: str = "encoder",
    ):
        (stem_width,) = check_positive_ints("stem_width", (stem_width,), 1)
        widths = check_positive_ints("widths", widths, 5)
        depths = check_positive_ints("depths", depths, 5)
        (num_features,) = check_positive_ints("num_features", (num_features,), 1)
        check_output_stride(output_stride)
        return native_encoder(
            key, inputs, input_shape, weights, input_normalization, input_range, name,
            lambda x: gernet_features(
                x, stem_width, widths, depths, num_features, output_stride, name
            ),
        )  # fmt: skip

    params = encoder_params(stem_width, widths, depths, num_features)
    register_timm_encoder(
        key,
        builder,
        description=(
            f"GENet-{key[-1].upper()} (timm's {key}, smp's tu-{key} / timm-{key}; widths "
            f"{list(widths)}, depths {list(depths)}, final {num_features}), "
            f"{params / 1e6:.1f}M params; timm's weights imagenet (= idstcv_in1k)."
        ),
        args=(
            "    stem_width: channels of the stem conv.\n"
            "    widths, depths: channels and blocks of the five stages.\n"
            "    num_features: channels of the final 1x1 conv (the stride-32 features).\n"
        ),
        tiny_config=TINY,
        table="gernet",
        first_conv="stem.conv",
        tags=("idstcv_in1k",),
        rename=smp_to_timm_key,
    )


for _key in VARIANTS:
    _register(_key)
