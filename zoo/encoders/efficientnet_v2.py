"""Native EfficientNetV2 encoders in timm's layout: the TensorFlow ports
``tf_efficientnetv2_b0`` ... ``_b3``, ``_s``, ``_m``, ``_l``, ``_xl``, Ross Wightman's
``efficientnetv2_rw_t`` / ``_rw_s`` / ``_rw_m`` and the plain ``efficientnetv2_s`` ... ``_xl``,
what segmentation_models_pytorch builds for ``tu-tf_efficientnetv2_*`` / ``tu-efficientnetv2_*``.

A 3x3 stride-2 conv-BN-SiLU stem, then timm's stages: 3x3 conv-BN-SiLU blocks (stage 0; the
``rw_s`` / ``rw_m`` variants start with fused blocks instead), fused inverted residuals
("FusedMBConv", timm's ``EdgeResidual``: a 3x3 expansion conv that also strides, a 1x1 linear
projection) and inverted residuals (1x1 expansion, depthwise 3x3, squeeze-and-excitation with
SiLU and a sigmoid gate, 1x1 linear projection); every block adds its input where the shape
stays. Stage plans, depth scaling (repeats times the variant's multiplier, rounded up),
channel rounding (multiples of 8; never 10% below, except in B0-B3, which round to the nearest),
SE widths (a quarter of the block's input channels, from the expanded width as timm computes
it) and feature points are timm's, so parameter counts equal timm's without the head (which is
not built) and smp's. Features: the ends of the stages that precede a downsampling, at strides
2 ... 32 (the stride-2 map is stage 0's).

The plain and ``rw`` variants pad as PyTorch (symmetric ``k // 2``), with batch-norm epsilon
1e-5; the ``tf_`` ones as TensorFlow ("same": more on the bottom / right where the stride
needs it), with epsilon 1e-3, like timm's ports of Google's checkpoints. Output stride 16 or 8
turns the strides past it into dilation as timm's builder does (the block that loses its
stride keeps the old rate, the blocks after it take the new one).

Pretrained weights (`weights` / a model's `encoder_weights`): ``"imagenet"`` (timm's default
weights of the variant, what smp's ``encoder_weights="imagenet"`` downloads: ImageNet-21k
fine-tuned on 1k for ``tf_efficientnetv2_b3`` and ``_s`` ... ``_xl``), a timm tag
(``"in1k"``, ``"in21k"``, ...; `zoo.pretrained.sources(name)` lists them) or a local timm or smp
checkpoint (an smp model's ``encoder.model.`` part). Each brings its own normalization into the
graph ([-1, 1] for the ``tf_`` S / M / L / XL weights and B3's ImageNet-21k ones, ImageNet's
for the others). The plain ``efficientnetv2_s`` ... ``_xl`` have no published weights.

Reference:
    Tan and Le, "EfficientNetV2: Smaller Models and Faster Training", ICML 2021.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras

from zoo import pretrained
from zoo.checks import check_positive, check_rate
from zoo.encoders._common import check_output_stride, native_encoder
from zoo.encoders._timm import register_timm_encoder
from zoo.encoders.efficientnet import round_filters
from zoo.encoders.mobilenet_v3 import timm_bn_act, timm_conv
from zoo.layers import DropPath, squeeze_excite

SE_RATIO = 0.25  # of the block's input channels (timm: se_from_exp=False)

# timm's arch_defs: stages of (kind, repeats, stride, expansion, channels), every kernel 3x3.
# "cn": conv-BN-SiLU (timm's ConvBnAct, "_skip": residual where the shape stays), "er": fused
# inverted residual (EdgeResidual), "ir": inverted residual with SE 0.25. No block is "noskip".
BASE = (
    ("cn", 1, 1, 1, 16), ("er", 2, 2, 4, 32), ("er", 2, 2, 4, 48), ("ir", 3, 2, 4, 96),
    ("ir", 5, 1, 6, 112), ("ir", 8, 2, 6, 192),
)  # fmt: skip
SMALL = (
    ("cn", 2, 1, 1, 24), ("er", 4, 2, 4, 48), ("er", 4, 2, 4, 64), ("ir", 6, 2, 4, 128),
    ("ir", 9, 1, 6, 160), ("ir", 15, 2, 6, 256),
)  # fmt: skip
MEDIUM = (
    ("cn", 3, 1, 1, 24), ("er", 5, 2, 4, 48), ("er", 5, 2, 4, 80), ("ir", 7, 2, 4, 160),
    ("ir", 14, 1, 6, 176), ("ir", 18, 2, 6, 304), ("ir", 5, 1, 6, 512),
)  # fmt: skip
LARGE = (
    ("cn", 4, 1, 1, 32), ("er", 7, 2, 4, 64), ("er", 7, 2, 4, 96), ("ir", 10, 2, 4, 192),
    ("ir", 19, 1, 6, 224), ("ir", 25, 2, 6, 384), ("ir", 7, 1, 6, 640),
)  # fmt: skip
XLARGE = (
    ("cn", 4, 1, 1, 32), ("er", 8, 2, 4, 64), ("er", 8, 2, 4, 96), ("ir", 16, 2, 4, 192),
    ("ir", 24, 1, 6, 256), ("ir", 32, 2, 6, 512), ("ir", 8, 1, 6, 640),
)  # fmt: skip
# timm's rw=True Small (before Google's code was out): a fused first stage, 272 channels last.
RW_SMALL = (("er", 2, 1, 1, 24), *SMALL[1:-1], ("ir", 15, 2, 6, 272))
# arch -> (stages, stem channels, round_limit of timm's round_chs_fn).
ARCHS = {
    "base": (BASE, 32, 0.0),
    "s": (SMALL, 24, 0.9),
    "rw_s": (RW_SMALL, 24, 0.9),
    "m": (MEDIUM, 24, 0.9),
    "l": (LARGE, 32, 0.9),
    "xl": (XLARGE, 32, 0.9),
}

# timm name -> (arch, channel multiplier, depth multiplier (per stage for rw_m), TensorFlow
# port, timm's tags: default first).
_21K = ("in21k_ft_in1k", "in1k", "in21k")
VARIANTS = {
    "tf_efficientnetv2_b0": ("base", 1.0, 1.0, True, ("in1k",)),
    "tf_efficientnetv2_b1": ("base", 1.0, 1.1, True, ("in1k",)),
    "tf_efficientnetv2_b2": ("base", 1.1, 1.2, True, ("in1k",)),
    "tf_efficientnetv2_b3": ("base", 1.2, 1.4, True, _21K),
    "tf_efficientnetv2_s": ("s", 1.0, 1.0, True, _21K),
    "tf_efficientnetv2_m": ("m", 1.0, 1.0, True, _21K),
    "tf_efficientnetv2_l": ("l", 1.0, 1.0, True, _21K),
    "tf_efficientnetv2_xl": ("xl", 1.0, 1.0, True, ("in21k_ft_in1k", "in21k")),
    "efficientnetv2_rw_t": ("s", 0.8, 0.9, False, ("ra2_in1k",)),
    "efficientnetv2_rw_s": ("rw_s", 1.0, 1.0, False, ("ra2_in1k",)),
    "efficientnetv2_rw_m": ("rw_s", 1.2, (1.2,) * 4 + (1.6,) * 2, False, ("agc_in1k",)),
    "efficientnetv2_s": ("s", 1.0, 1.0, False, ()),
    "efficientnetv2_m": ("m", 1.0, 1.0, False, ()),
    "efficientnetv2_l": ("l", 1.0, 1.0, False, ()),
    "efficientnetv2_xl": ("xl", 1.0, 1.0, False, ()),
}


def tag_normalization(key: str, tag: str) -> pretrained.Normalization:
    """The preprocessing timm's `tag` weights of `key` were trained with: [-1, 1] for Google's
    ImageNet-21k runs and its S / M / L / XL ImageNet-1k ones, ImageNet's otherwise."""
    big = key.startswith("tf_") and VARIANTS[key][0] != "base"
    return pretrained.INCEPTION if big or "in21k" in tag else pretrained.IMAGENET


def round_channels(channels: float, multiplier: float, limit: float) -> int:
    """timm's round_channels: `channels` times `multiplier` to the nearest multiple of 8 (at
    least 8), plus 8 where that falls below `limit` of it (0.9; 0 for B0-B3: never)."""
    if limit:
        return round_filters(channels, multiplier)
    return max(8, int(channels * multiplier + 4) // 8 * 8)


def plan(arch: str, multiplier: float, depth: float | tuple, depth_scale: float = 1.0):
    """(stem channels, stages of ``(kind, stride, expansion, channels)`` per block) of timm's
    `arch` scaled as timm scales it: channels rounded by its round_chs_fn, repeats times
    `depth` (one number, or one per stage) rounded up; only a stage's first block strides."""
    stages, stem, limit = ARCHS[arch]
    depths = depth if isinstance(depth, tuple) else (depth,) * len(stages)
    blocks = tuple(
        tuple(
            (kind, stride if r == 0 else 1, expand, round_channels(channels, multiplier, limit))
            for r in range(math.ceil(repeats * (d * depth_scale)))
        )
        for (kind, repeats, stride, expand, channels), d in zip(stages, depths, strict=True)
    )
    return round_channels(stem, multiplier, limit), blocks


def efficientnet_v2_block(
    x, kind: str, stride: int, expand: float, channels: int, dilation: int, epsilon: float,
    tf_padding: bool, drop: float, name: str,
):  # fmt: skip
    """One timm block with `channels` outputs; `stride` / `dilation` as the output stride
    leaves them. Layers ``{name}_{conv, bn}`` (conv-BN-SiLU), ``{name}_{exp, se, pwl}_*``
    (fused) or ``{name}_{expand, dw, se, project}_*`` (inverted residual)."""
    inputs, width = x, int(x.shape[-1])
    if kind == "cn":
        x = timm_conv(x, channels, 3, stride, dilation, tf_padding, f"{name}_conv")
        x = timm_bn_act(x, name, epsilon, "silu")
    else:
        mid = round_filters(width * expand, 1.0)
        if kind == "er":
            x = timm_conv(x, mid, 3, stride, dilation, tf_padding, f"{name}_exp_conv")
            x = timm_bn_act(x, f"{name}_exp", epsilon, "silu")
            project = f"{name}_pwl"
        else:
            x = timm_conv(x, mid, 1, 1, 1, tf_padding, f"{name}_expand_conv")
            x = timm_bn_act(x, f"{name}_expand", epsilon, "silu")
            x = timm_conv(x, mid, 3, stride, dilation, tf_padding, f"{name}_dw_conv", True)
            x = timm_bn_act(x, f"{name}_dw", epsilon, "silu")
            # timm: round(expanded * ratio / expansion), Python's rounding
            x = squeeze_excite(x, round(mid * (SE_RATIO / expand)), f"{name}_se", "silu")
            project = f"{name}_project"
        x = timm_conv(x, channels, 1, 1, 1, tf_padding, f"{project}_conv")
        x = timm_bn_act(x, project, epsilon, None)
    if stride == 1 and width == channels:
        if drop > 0:
            x = DropPath(drop, name=f"{name}_drop")(x)
        x = keras.layers.Add(name=f"{name}_add")([x, inputs])
    return x


def efficientnet_v2_features(
    x,
    stem: int,
    stages: Sequence[Sequence[tuple]],
    tf_port: bool,
    output_stride: int = 32,
    drop_path_rate: float = 0.0,
    name: str = "encoder",
) -> dict:
    """EfficientNetV2 feature maps keyed by stride 2 ... 32 (below output stride 32 the
    deepest share a key and the last wins) for a `plan`. Layers ``{name}_stem_{conv, bn,
    silu}`` and ``{name}_block{stage}_{i}_*`` (timm's ``blocks.{stage}.{i}``)."""
    epsilon = 1e-3 if tf_port else 1e-5
    x = timm_conv(x, stem, 3, 2, 1, tf_port, f"{name}_stem_conv")
    x = timm_bn_act(x, f"{name}_stem", epsilon, "silu")
    features, stride, dilation = {}, 2, 1
    total, index = sum(len(stage) for stage in stages), 0
    for s, stage in enumerate(stages):
        for i, (kind, step, expand, channels) in enumerate(stage):
            rate = dilation
            if step > 1 and stride * step > output_stride:
                dilation, step = dilation * step, 1  # timm: this block keeps the old rate
            stride *= step
            x = efficientnet_v2_block(
                x, kind, step, expand, channels, rate, epsilon, tf_port,
                drop_path_rate * index / total, f"{name}_block{s}_{i}",
            )  # fmt: skip
            index += 1
        if s + 1 == len(stages) or stages[s + 1][0][1] > 1:
            features[stride] = x
    return features


def encoder_params(stem: int, stages: Sequence[Sequence[tuple]]) -> int:
    """Trainable parameters of an EfficientNetV2 encoder (stem, blocks) from its `plan`, for 3
    input channels: what timm and smp count without the head."""
    total, channels = 27 * stem + 2 * stem, stem
    for kind, _, expand, out in (block for stage in stages for block in stage):
        if kind == "cn":
            total += 9 * channels * out + 2 * out
        else:
            mid = round_filters(channels * expand, 1.0)
            if kind == "er":
                total += 9 * channels * mid + 2 * mid
            else:
                squeeze = round(mid * (SE_RATIO / expand))
                total += channels * mid + 9 * mid + 4 * mid + 2 * mid * squeeze + squeeze + mid
            total += mid * out + 2 * out
        channels = out
    return total


def _register(key: str) -> None:
    arch, multiplier, depth, tf_port, tags = VARIANTS[key]

    def builder(
        inputs=None,
        *,
        input_shape: Sequence[int | None] = (None, None, 3),
        width_scale: float = 1.0,
        depth_scale: float = 1.0,
        drop_path_rate: float = 0.0,
        weights: str | None = None,
        input_normalization: str | None = "weights",
        input_range: Sequence[float] | None = None,
        output_stride: int = 32,
        name: str = "encoder",
    ):
        width_scale = check_positive("width_scale", width_scale)
        depth_scale = check_positive("depth_scale", depth_scale)
        drop_path_rate = check_rate("drop_path_rate", drop_path_rate)
        check_output_stride(output_stride)
        stem, stages = plan(arch, multiplier * width_scale, depth, depth_scale)
        return native_encoder(
            key,
            inputs,
            input_shape,
            weights,
            input_normalization,
            input_range,
            name,
            lambda x: efficientnet_v2_features(
                x, stem, stages, tf_port, output_stride, drop_path_rate, name
            ),
        )

    size = key.split("efficientnetv2_")[1].upper().replace("_", "-")  # B0 ... XL, RW-T ...
    port = "TensorFlow port, 'same' padding" if tf_port else "PyTorch padding"
    named = (
        f"timm's weights imagenet (= {tags[0]}){''.join(', ' + t for t in sorted(tags[1:]))}"
        if tags
        else "no published weights"
    )
    register_timm_encoder(
        key,
        builder,
        description=(
            f"EfficientNetV2-{size} ({port}; timm's {key}, smp's tu-{key}), "
            f"{encoder_params(*plan(arch, multiplier, depth)) / 1e6:.2f}M params; {named}."
        ),
        args=(
            "    width_scale: channels times this (on top of the variant's multiplier), rounded\n"
            "        to multiples of 8 as timm rounds them.\n"
            "    depth_scale: each stage's repeats times this (on top of the variant's depth\n"
            "        multiplier), rounded up as timm rounds them (other than 1: not timm's keys).\n"
            "    drop_path_rate: stochastic depth of the last residual block (linear from 0).\n"
        ),
        tiny_config={"width_scale": 0.25, "depth_scale": 0.25},
        table="efficientnet_v2",
        first_conv="conv_stem",
        tags=tags,
        normalization=tag_normalization(key, tags[0] if tags else ""),
        tag_normalization={t: tag_normalization(key, t) for t in tags},
    )


for _key in VARIANTS:
    _register(_key)
