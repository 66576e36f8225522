"""Native MobileNetV3 encoders in timm's layout: ``mobilenetv3_large_075`` ...
``mobilenetv3_small_100`` and the TensorFlow ports ``tf_mobilenetv3_*``, what
segmentation_models_pytorch builds for ``tu-mobilenetv3_*`` / ``tu-tf_mobilenetv3_*`` and for
its older ``timm-mobilenetv3_*`` names (which smp 0.6 maps to the ``tf_`` ones).

A 3x3 stride-2 conv-BN-activation stem (16 channels), a depthwise-separable block, inverted
residuals (1x1 expansion, depthwise 3x3 or 5x5, squeeze-and-excitation with a ReLU and a hard
sigmoid gate, 1x1 linear projection, residual where the shape stays) and a final 1x1
conv-BN-activation (960 channels in Large, 576 in Small). Hard-swish everywhere but the
blocks the paper keeps on ReLU; the "minimal" variants use ReLU, 3x3 kernels and no SE. The
stage plans, channel rounding (multiples of 8, never 10% below), SE widths (a quarter of the
expanded channels, rounded the same way) and feature points are timm's, so parameter counts
equal timm's without the classifier and smp's. Features: the ends of the stages that precede
a downsampling, at strides 2 ... 32 (Small downsamples in its first block, so its stride-2
map is the stem's).

The plain variants pad as PyTorch (symmetric ``k // 2``), with batch-norm epsilon 1e-5; the
``tf_`` ones as TensorFlow ("same": more on the bottom / right where the stride needs it),
with epsilon 1e-3, like timm's ports of Google's checkpoints. Output stride 16 or 8 turns the
strides past it into dilation as timm's builder does (the block that loses its stride keeps
the old rate, the blocks after it take the new one).

Pretrained weights (`weights` / a model's `encoder_weights`): ``"imagenet"`` (timm's default
weights of the variant, what smp's ``encoder_weights="imagenet"`` downloads), a timm tag
(``"ra_in1k"``, ``"miil_in21k_ft_in1k"``, ...; `zoo.pretrained.sources(name)` lists them) or a
local timm or smp checkpoint (an smp model's ``encoder.model.`` part). Each brings its own
normalization into the graph (ImageNet's; [-1, 1] for the ``tf_`` and ``ra4`` weights; none
beyond [0, 1] for MIIL's). ``mobilenetv3_large_075`` has no published weights.

Reference:
    Howard et al., "Searching for MobileNetV3", ICCV 2019.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import keras

from zoo import pretrained
from zoo.checks import check_positive, check_rate
from zoo.encoders._common import check_output_stride, native_encoder
from zoo.encoders._timm import register_timm_encoder
from zoo.encoders.efficientnet import round_filters
from zoo.layers import DropPath, batch_norm, squeeze_excite

STEM = 16
SE_RATIO = 0.25


@dataclass(frozen=True)
class Block:
    """One block of a stage plan: ``ds`` (depthwise separable), ``ir`` (inverted residual)
    or ``cn`` (1x1 conv-BN-activation); `relu` keeps it on ReLU in a hard-swish network."""

    kind: str
    kernel: int
    stride: int
    expand: float
    channels: int
    se: bool = False
    relu: bool = False


def _plan(*stages) -> tuple[tuple[Block, ...], ...]:
    """Stages of ``(kind, repeats, kernel, stride, expand, channels, se, relu)``, repeats
    unrolled (only a stage's first block strides)."""
    return tuple(
        tuple(
            Block(kind, kernel, stride if r == 0 else 1, expand, channels, se, relu)
            for kind, repeats, kernel, stride, expand, channels, se, relu in stage
            for r in range(repeats)
        )
        for stage in stages
    )


# timm's arch_def of MobileNetV3-Large / -Small (the paper's Tables 1 and 2).
LARGE = _plan(
    [("ds", 1, 3, 1, 1, 16, False, True)],
    [("ir", 1, 3, 2, 4, 24, False, True), ("ir", 1, 3, 1, 3, 24, False, True)],
    [("ir", 3, 5, 2, 3, 40, True, True)],
    [("ir", 1, 3, 2, 6, 80, False, False), ("ir", 1, 3, 1, 2.5, 80, False, False)]
    + [("ir", 2, 3, 1, 2.3, 80, False, False)],
    [("ir", 2, 3, 1, 6, 112, True, False)],
    [("ir", 3, 5, 2, 6, 160, True, False)],
    [("cn", 1, 1, 1, 1, 960, False, False)],
)
SMALL = _plan(
    [("ds", 1, 3, 2, 1, 16, True, True)],
    [("ir", 1, 3, 2, 4.5, 24, False, True), ("ir", 1, 3, 1, 3.67, 24, False, True)],
    [("ir", 1, 5, 2, 4, 40, True, False), ("ir", 2, 5, 1, 6, 40, True, False)],
    [("ir", 2, 5, 1, 3, 48, True, False)],
    [("ir", 3, 5, 2, 6, 96, True, False)],
    [("cn", 1, 1, 1, 1, 576, False, False)],
)


def minimal(plan):
    """timm's "minimal" form of a plan: 3x3 kernels, no SE (and ReLU throughout)."""
    return tuple(
        tuple(Block(b.kind, min(b.kernel, 3), b.stride, b.expand, b.channels) for b in stage)
        for stage in plan
    )


# timm name -> (plan, channel multiplier, TensorFlow port, timm's tags: default first).
_IN1K, _RA4, _MIIL = "in1k", "ra4_e3600_r224_in1k", "miil_in21k_ft_in1k"
VARIANTS = {
    "mobilenetv3_large_075": ("large", 0.75, False, ()),
    "mobilenetv3_large_100": ("large", 1.0, False, ("ra_in1k", _RA4, _MIIL)),
    "mobilenetv3_small_050": ("small", 0.5, False, ("lamb_in1k",)),
    "mobilenetv3_small_075": ("small", 0.75, False, ("lamb_in1k",)),
    "mobilenetv3_small_100": ("small", 1.0, False, ("lamb_in1k",)),
    "tf_mobilenetv3_large_075": ("large", 0.75, True, (_IN1K,)),
    "tf_mobilenetv3_large_100": ("large", 1.0, True, (_IN1K,)),
    "tf_mobilenetv3_large_minimal_100": ("large_minimal", 1.0, True, (_IN1K,)),
    "tf_mobilenetv3_small_075": ("small", 0.75, True, (_IN1K,)),
    "tf_mobilenetv3_small_100": ("small", 1.0, True, (_IN1K,)),
    "tf_mobilenetv3_small_minimal_100": ("small_minimal", 1.0, True, (_IN1K,)),
}
PLANS = {"large": LARGE, "small": SMALL, "large_minimal": minimal(LARGE)}
PLANS["small_minimal"] = minimal(SMALL)
# Normalization of each tag's training images (None: ImageNet's).
_UNIT = pretrained.Normalization(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
_NORMALIZATION = {_IN1K: pretrained.INCEPTION, _RA4: pretrained.INCEPTION, _MIIL: _UNIT}


def timm_conv(x, filters: int, kernel: int, stride: int, dilation: int, tf_padding: bool, name,
          depthwise: bool = False):  # fmt: skip
    """A bias-free conv padded as timm pads it: TensorFlow's "same" for the ``tf_`` ports,
    else PyTorch's symmetric ``k // 2 * dilation`` (the same as "same" at stride 1)."""
    padding = "same"
    if stride > 1 and not tf_padding:
        x = keras.layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
        padding = "valid"
    kwargs = {"strides": stride, "dilation_rate": dilation, "padding": padding}
    if depthwise:
        return keras.layers.DepthwiseConv2D(kernel, use_bias=False, name=name, **kwargs)(x)
    return keras.layers.Conv2D(filters, kernel, use_bias=False, name=name, **kwargs)(x)


def timm_bn_act(x, name: str, epsilon: float, activation: str | None):
    """Batch norm ``{name}_bn`` with timm's per-variant `epsilon`, then `activation` (or none)."""
    x = batch_norm(f"{name}_bn", epsilon=epsilon)(x)
    if activation is None:
        return x
    return keras.layers.Activation(activation, name=f"{name}_{activation}")(x)


def mobilenet_v3_block(
    x,
    block: Block,
    channels: int,
    stride: int,
    dilation: int,
    activation: str,
    epsilon: float,
    tf_padding: bool,
    drop: float,
    name: str,
):
    """One timm block (`Block`) with `channels` outputs; `stride` / `dilation` as the output
    stride leaves them. Layers ``{name}_{expand, dw, se, project}_*`` (``conv`` / ``bn`` for
    the final 1x1 block)."""
    inputs, width = x, int(x.shape[-1])
    act = "relu" if block.relu else activation
    if block.kind == "cn":
        x = timm_conv(x, channels, block.kernel, stride, dilation, tf_padding, f"{name}_conv")
        return timm_bn_act(x, name, epsilon, act)
    if block.kind == "ir":
        width = round_filters(width * block.expand, 1.0)
        x = timm_conv(x, width, 1, 1, 1, tf_padding, f"{name}_expand_conv")
        x = timm_bn_act(x, f"{name}_expand", epsilon, act)
    x = timm_conv(x, width, block.kernel, stride, dilation, tf_padding, f"{name}_dw_conv", True)
    x = timm_bn_act(x, f"{name}_dw", epsilon, act)
    if block.se:
        squeeze = round_filters(width * SE_RATIO, 1.0)
        x = squeeze_excite(x, squeeze, f"{name}_se", gate="hard_sigmoid")
    x = timm_conv(x, channels, 1, 1, 1, tf_padding, f"{name}_project_conv")
    x = timm_bn_act(x, f"{name}_project", epsilon, None)
    if stride == 1 and int(inputs.shape[-1]) == channels:
        if drop > 0:
            x = DropPath(drop, name=f"{name}_drop")(x)
        x = keras.layers.Add(name=f"{name}_add")([x, inputs])
    return x


def mobilenet_v3_features(
    x,
    plan: Sequence[Sequence[Block]],
    multiplier: float,
    tf_port: bool,
    relu: bool,
    output_stride: int = 32,
    drop_path_rate: float = 0.0,
    name: str = "encoder",
) -> dict:
    """MobileNetV3 feature maps keyed by stride 2 ... 32 (below output stride 32 the deepest
    share a key and the last wins). Layers ``{name}_stem_{conv, bn, <act>}`` and
    ``{name}_block{stage}_{i}_*`` (timm's ``blocks.{stage}.{i}``)."""
    activation = "relu" if relu else "hard_swish"
    epsilon = 1e-3 if tf_port else 1e-5
    stem = STEM if multiplier < 0.75 else round_filters(STEM, multiplier)  # timm's fix_stem
    x = timm_conv(x, stem, 3, 2, 1, tf_port, f"{name}_stem_conv")
    x = timm_bn_act(x, f"{name}_stem", epsilon, activation)
    features, stride, dilation = {}, 2, 1
    if plan[0][0].stride > 1:  # the first block downsamples: the stride-2 map is the stem's
        features[2] = x
    total, index = sum(len(stage) for stage in plan), 0
    for s, stage in enumerate(plan):
        for i, block in enumerate(stage):
            step, rate = block.stride, dilation
            if step > 1 and stride * step > output_stride:
                dilation, step = dilation * step, 1  # timm: this block keeps the old rate
            stride *= step
            x = mobilenet_v3_block(
                x, block, round_filters(block.channels, multiplier), step, rate, activation,
                epsilon, tf_port, drop_path_rate * index / total, f"{name}_block{s}_{i}",
            )  # fmt: skip
            index += 1
        if s + 1 == len(plan) or plan[s + 1][0].stride > 1:
            features[stride] = x
    return features


def encoder_params(plan: Sequence[Sequence[Block]], multiplier: float) -> int:
    """Trainable parameters of a MobileNetV3 encoder (stem, blocks, final 1x1) from its plan,
    for 3 input channels: what timm and smp count without the head."""
    channels = STEM if multiplier < 0.75 else round_filters(STEM, multiplier)
    total = 27 * channels + 2 * channels
    for block in (b for stage in plan for b in stage):
        out = round_filters(block.channels, multiplier)
        width = channels
        if block.kind == "cn":
            total += channels * out + 2 * out
        else:
            if block.kind == "ir":
                width = round_filters(channels * block.expand, 1.0)
                total += channels * width + 2 * width
            total += block.kernel**2 * width + 2 * width
            if block.se:
                squeeze = round_filters(width * SE_RATIO, 1.0)
                total += 2 * width * squeeze + squeeze + width
            total += width * out + 2 * out
        channels = out
    return total


def _register(key: str) -> None:
    plan_name, multiplier, tf_port, tags = VARIANTS[key]
    plan = PLANS[plan_name]
    relu = plan_name.endswith("minimal")

    def builder(
        inputs=None,
        *,
        input_shape: Sequence[int | None] = (None, None, 3),
        width_scale: float = 1.0,
        drop_path_rate: float = 0.0,
        weights: str | None = None,
        input_normalization: str | None = "weights",
        input_range: Sequence[float] | None = None,
        output_stride: int = 32,
        name: str = "encoder",
    ):
        width_scale = check_positive("width_scale", width_scale)
        drop_path_rate = check_rate("drop_path_rate", drop_path_rate)
        check_output_stride(output_stride)
        return native_encoder(
            key,
            inputs,
            input_shape,
            weights,
            input_normalization,
            input_range,
            name,
            lambda x: mobilenet_v3_features(
                x,
                plan,
                multiplier * width_scale,
                tf_port,
                relu,
                output_stride,
                drop_path_rate,
                name,
            ),  # fmt: skip
        )

    size = plan_name.split("_")[0].title()
    form = " minimal" if relu else ""
    port = "TensorFlow port, 'same' padding" if tf_port else "PyTorch padding"
    port = f"ReLU, 3x3 kernels, no SE; {port}" if relu else port
    smp_names = f"smp's tu-{key}" + (f" / timm-{key[3:]}" if tf_port else "")
    named = (
        f"timm's weights imagenet (= {tags[0]}){''.join(', ' + t for t in sorted(tags[1:]))}"
        if tags
        else "no published weights"
    )
    register_timm_encoder(
        key,
        builder,
        description=(
            f"MobileNetV3-{size} x{multiplier:g}{form} ({port}; timm's {key}, {smp_names}), "
            f"{encoder_params(plan, multiplier) / 1e6:.2f}M params; {named}."
        ),
        args=(
            "    width_scale: channels times this (on top of the variant's multiplier), rounded\n"
            "        to multiples of 8 as timm rounds them.\n"
            "    drop_path_rate: stochastic depth of the last residual block (linear from 0).\n"
        ),
        tiny_config={"width_scale": 0.25},
        table="mobilenet_v3",
        first_conv="conv_stem",
        tags=tags,
        normalization=pretrained.INCEPTION if tf_port else pretrained.IMAGENET,
        tag_normalization=_NORMALIZATION,
    )


for _key in VARIANTS:
    _register(_key)
