"""Native EfficientNet-B0..B7 encoders in the layout of lukemelas' efficientnet_pytorch.

The encoders segmentation_models_pytorch builds as ``efficientnet-b0`` ... ``efficientnet-b7``
(registered under those names): a 3x3/2 stem, then mobile inverted bottlenecks (1x1 expansion,
depthwise k x k, squeeze-and-excitation with SiLU, 1x1 projection; a residual with stochastic
depth where the shape allows), widths and repeats scaled by each variant's coefficients, batch
norms with momentum 0.01 / epsilon 1e-3 (PyTorch's terms), SiLU activations. Kept from the
original so that its weights compute what they did:

- "Static same" padding: every conv pads as TensorFlow's "same" would for the variant's
  training resolution (224 for B0 ... 600 for B7), fixed whatever the input size, exactly as
  efficientnet_pytorch's ``Conv2dStaticSamePadding``.
- smp's feature maps: the stem (stride 2) and the outputs of the blocks smp names in its
  ``out_indexes`` (B0's stride-16 map is the first 112-channel block's, as smp's).
- Output strides 16 and 8 as smp's ``make_dilated``: the blocks after an out index convolve
  with stride 1 and dilation 2 (4), padded symmetrically.

Checkpoint keys: ``_conv_stem``, ``_bn0``, ``_blocks.{i}._expand_conv`` ... ``_bn2`` (the
``efficientnet`` port table); the classifier head (``_conv_head``, ``_bn1``, ``_fc``), which
smp builds and never runs, is ignored. Named weights: smp's files (``smp-hub``, pinned to the
revision smp 0.6 reads): ``imagenet`` (ImageNet normalization) and ``advprop`` (adversarial
propagation, images mapped to [-1, 1]).

Reference:
    Tan and Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks",
    ICML 2019.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import keras

from zoo import pretrained
from zoo.checks import check_positive, check_rate
from zoo.encoders._common import (
    apply_input_range,
    apply_weights_normalization,
    check_input_range,
    check_output_stride,
    run_encoder,
    weights_normalization,
)
from zoo.layers import DropPath, batch_norm, squeeze_excite
from zoo.registry import register_encoder

# B0's stages: (repeats, kernel, stride, expansion, input filters, output filters); SE 0.25.
_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
# name -> (width, depth, training resolution, smp's out indexes, smp-hub revisions).
_VARIANTS: dict[str, tuple[float, float, int, tuple[int, ...], tuple[str, str]]] = {
    "efficientnet-b0": (1.0, 1.0, 224, (2, 4, 8, 15), ("1bbe7ecc", "29043c08")),
    "efficientnet-b1": (1.0, 1.1, 240, (4, 7, 15, 22), ("5d637466", "2e518b8b")),
    "efficientnet-b2": (1.1, 1.2, 260, (4, 7, 15, 22), ("a96d4f02", "be788c20")),
    "efficientnet-b3": (1.2, 1.4, 300, (4, 7, 17, 25), ("074c54a6", "9ccc166d")),
    "efficientnet-b4": (1.4, 1.8, 380, (5, 9, 21, 31), ("05cd5dde", "f04caa80")),
    "efficientnet-b5": (1.6, 2.2, 456, (7, 12, 26, 38), ("69f4d284", "dabe78fc")),
    "efficientnet-b6": (1.8, 2.6, 528, (8, 14, 30, 44), ("85707520", "c2dbb4d1")),
    "efficientnet-b7": (2.0, 3.1, 600, (10, 17, 37, 54), ("5a5dbe68", "ce33edb4")),
}
# The full smp-hub revisions (imagenet, advprop), keyed by their first 8 digits above.
_REVISIONS = {
    r[:8]: r
    for r in (
        "1bbe7ecc1d5ea1d2058de1a2db063b8701aff314", "29043c08140d9c6ee7de1468d55923f2b06bcec2",
        "5d637466a5215de300a8ccb13a39357df2df2bf4", "2e518b8b0955bbab467f50525578dab6b6086afc",
        "a96d4f0295ffbae18ebba173bf7f3c0c8f21990e", "be788c20dfb0bbe83b4c439f9cfe0dd937c0783e",
        "074c54a6c473e0d294690d49cedb6cf463e7127d", "9ccc166d87bd9c08d6bed4477638c7f4bb3eec78",
        "05cd5dde5dab658f00c463f9b9aa0ced76784f40", "f04caa809ea4eb08ee9e7fd555f5514ebe2a9ef5",
        "69f4d28460a4e421b7860bc26ee7d832e03e01ca", "dabe78fc8ab7ce93ddc2bb156b01db227caede88",
        "8570752016f7c62ae149cffa058550fe44e21c8b", "c2dbb4d1359151165ec7b96cfe54a9cac2142a31",
        "5a5dbe687d612ebc3dca248274fd1191111deda6", "ce33edb4e80c0cde268f098ae2299e23f615577d",
    )
}  # fmt: skip
ADVPROP = pretrained.INCEPTION


def round_filters(filters: float, width: float) -> int:
    """Channels scaled by `width`, to a multiple of 8, never more than 10% below."""
    filters *= width
    rounded = max(8, int(filters + 4) // 8 * 8)
    return int(rounded + 8 if rounded < 0.9 * filters else rounded)


def static_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's "same" padding (before, after) for an input of `size` pixels."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


@dataclass(frozen=True)
class Style:
    """What differs between EfficientNet implementations of the same architecture.

    Args:
        size: the resolution efficientnet_pytorch's static "same" padding is computed for,
            None for PyTorch's symmetric ``k // 2`` (timm's), or "same" for TensorFlow's
            dynamic "same" of every input size (more on the bottom / right where the stride
            needs it: timm's ``tf_`` ports, ``pad_type='same'``).
        epsilon: the batch norms' epsilon (momentum 0.99 in Keras' terms either way).
        se: whether blocks squeeze and excite (not in EfficientNet-Lite).
        activation: "silu" (EfficientNet) or "relu6" (Lite).
        stage_names: name blocks ``block{stage}_{i}`` (timm's keys) instead of ``block{n}``.
        timm_dilation: below output stride 32, dilate as timm's builder (its
            ``output_stride``, smp's ``tu-`` encoders): the block that loses its stride keeps
            the old rate, the blocks after it take the new one. False: smp's
            ``make_dilated`` (every block after an out index dilates, strides dropped).
    """

    size: int | str | None = None
    epsilon: float = 1e-3
    se: bool = True
    activation: str = "silu"
    stage_names: bool = False
    timm_dilation: bool = False


def _conv(x, filters, kernel, stride, size, dilation, name, depthwise=False):
    """A conv padded as efficientnet_pytorch pads it: static "same" for `size` pixels, or
    symmetric ``k // 2 * dilation`` in a dilated stage (smp's make_dilated) or without a
    `size` (timm's padding); TensorFlow's own "same" for `size` "same"."""
    padding = "same" if size == "same" else "valid"
    if size != "same":
        if dilation > 1 or size is None:
            pads = (kernel // 2 * dilation,) * 2
        else:
            pads = static_same_padding(size, kernel, stride)
        if max(pads) > 0:
            x = keras.layers.ZeroPadding2D((pads, pads), name=f"{name}_pad")(x)
    kwargs = {"strides": stride, "dilation_rate": dilation, "use_bias": False, "name": name}
    kwargs["padding"] = padding
    if depthwise:
        return keras.layers.DepthwiseConv2D(kernel, **kwargs)(x)
    return keras.layers.Conv2D(filters, kernel, **kwargs)(x)


def _bn_act(x, name, style: Style, activation: str | None = "style"):
    x = batch_norm(f"{name}_bn", momentum=0.99, epsilon=style.epsilon)(x)
    activation = style.activation if activation == "style" else activation
    if activation is None:
        return x
    return keras.layers.Activation(activation, name=f"{name}_{activation}")(x)


def mbconv_block(x, out, kernel, stride, expand, squeeze, size, dilation, drop, name, style):
    """One mobile inverted bottleneck; `squeeze`: the SE's channels (from the block input)."""
    inputs, channels = x, int(x.shape[-1])
    hidden = channels * expand
    if expand != 1:
        x = _conv(x, hidden, 1, 1, size, 1, f"{name}_expand_conv")
        x = _bn_act(x, f"{name}_expand", style)
    x = _conv(x, hidden, kernel, stride, size, dilation, f"{name}_dw_conv", depthwise=True)
    x = _bn_act(x, f"{name}_dw", style)
    if style.se:
        x = squeeze_excite(x, squeeze, f"{name}_se", activation=style.activation)
    x = _conv(x, out, 1, 1, size, 1, f"{name}_project_conv")
    x = _bn_act(x, f"{name}_project", style, activation=None)
    if stride == 1 and channels == out:
        if drop > 0:
            x = DropPath(drop, name=f"{name}_drop")(x)
        x = keras.layers.Add(name=f"{name}_add")([x, inputs])
    return x


def efficientnet_features(
    x,
    stages: Sequence[tuple[int, int, int, int, int, int]],
    stem: int,
    out_indexes: Sequence[int],
    output_stride: int,
    drop_path_rate: float,
    name: str,
    style: Style,
) -> dict:
    """EfficientNet feature maps keyed by stride ({2, ..., 32}; dilated stages stop at 16 or
    8): a 3x3/2 stem of `stem` channels, then `stages` of (repeats, kernel, stride,
    expansion, input channels, output channels); the blocks numbered `out_indexes` (0-based,
    over all blocks) give the maps at strides 4-32 (one still at stride 2 replaces the
    stem's map: timm's stride-2 feature is its first stage's). smp's dilation reads the
    stride-8 and -16 ones as ``out_indexes[1]``, ``[2]``; `style.timm_dilation` none."""
    check_output_stride(output_stride)
    total = sum(stage[0] for stage in stages)
    size = style.size
    x = _conv(x, stem, 3, 2, size, 1, f"{name}_stem_conv")
    x = _bn_act(x, f"{name}_stem", style)
    features, index, stride, rate = {2: x}, 0, 2, 1
    size = math.ceil(size / 2) if isinstance(size, int) else size
    # smp's make_dilated: the blocks after out index 1 (2) form the stride-16 (32) stage.
    rates = {16: {16: 1, 32: 2}, 8: {16: 2, 32: 4}}.get(output_stride, {16: 1, 32: 1})
    for number, (repeats, kernel, block_stride, expand, filters_in, filters_out) in enumerate(
        stages
    ):
        for r in range(repeats):
            s = block_stride if r == 0 else 1
            if style.timm_dilation:  # this block keeps the rate, the next ones take the new
                dilation = rate
                if s > 1 and stride * s > output_stride:
                    rate, s = rate * s, 1
            else:
                dilation = (
                    rates[32] if index > out_indexes[2]
                    else rates[16] if index > out_indexes[1] else 1
                )  # fmt: skip
                s = s if dilation == 1 else 1
            squeeze = max(1, int((filters_in if r == 0 else filters_out) * 0.25))
            block = f"{name}_block{number}_{r}" if style.stage_names else f"{name}_block{index}"
            x = mbconv_block(
                x, filters_out, kernel, s, expand, squeeze, size, dilation,
                drop_path_rate * index / total, block, style,
            )  # fmt: skip
            stride *= s
            size = math.ceil(size / s) if isinstance(size, int) else size
            if index in out_indexes:
                features[stride] = x
            index += 1
    return features


def scaled_stages(width: float, depth: float, fixed_ends: bool = False) -> list[tuple]:
    """B0's stages with channels times `width` and repeats times `depth` (rounded up);
    `fixed_ends` keeps the first and last stages' repeats (EfficientNet-Lite)."""
    return [
        (
            r if fixed_ends and n in (0, len(_STAGES) - 1) else math.ceil(depth * r),
            k,
            s,
            e,
            round_filters(i, width),
            round_filters(o, width),
        )  # fmt: skip
        for n, (r, k, s, e, i, o) in enumerate(_STAGES)
    ]


def efficientnet_builder(
    variant: str, plan: Callable[[float], tuple], doc: str, drop_path: float = 0.2
) -> Callable:
    """The registered builder of EfficientNet `variant`: `plan(width_scale)` gives its
    ``(stages, stem channels, out indexes, Style)`` (`efficientnet_features`' arguments),
    the builder checks the common arguments, normalizes and loads the weights; `drop_path`:
    its default `drop_path_rate` (smp's efficientnet-b* 0.2, timm's own 0)."""

    def build(
        inputs=None,
        *,
        input_shape: Sequence[int | None] = (None, None, 3),
        width_scale: float = 1.0,
        output_stride: int = 32,
        drop_path_rate: float = drop_path,
        weights: str | None = None,
        input_normalization: str | None = "weights",
        input_range: Sequence[float] | None = None,
        name: str = "encoder",
    ):
        check_positive("width_scale", width_scale)
        bounds = check_input_range(input_range)
        check_rate("drop_path_rate", drop_path_rate)
        normalization = weights_normalization(variant, weights, input_normalization)
        stages, stem, out_indexes, style = plan(width_scale)

        def body(x):
            x = apply_input_range(x, bounds, name)
            x = apply_weights_normalization(x, normalization, name)
            features = efficientnet_features(
                x, stages, stem, out_indexes, output_stride, drop_path_rate, name, style
            )
            pretrained.load_native(variant, weights, x, features, name, normalization)
            return features

        return run_encoder(inputs, input_shape, name, body)

    build.__name__ = build.__qualname__ = variant.replace("-", "_")
    build.__doc__ = doc
    return build


def _plan(variant: str) -> Callable[[float], tuple]:
    def plan(width_scale: float) -> tuple:
        width, depth, size, out_indexes, _ = _VARIANTS[variant]
        width *= width_scale
        return scaled_stages(width, depth), round_filters(32, width), out_indexes, Style(size)

    return plan


_DOC = """EfficientNet-{b} encoder (efficientnet_pytorch layout, smp's ``{name}``). Returns
    ``{{stride: features}}`` for a tensor, or a `keras.Model`.

    Args:
        inputs: image tensor in [0, 1], or None to get a standalone model.
        input_shape: shape of the standalone model's input (any number of channels).
        width_scale: multiplies the variant's width coefficient (1 = the original; smaller
            for quick tests).
        output_stride: 32, 16 or 8; below 32 the last blocks use dilation (as smp's).
        drop_path_rate: stochastic depth of the last block (0.2 = smp's), linearly less for
            earlier ones; 0 disables.
        weights: None (random), "imagenet" or "advprop" (segmentation_models_pytorch's files,
            from the Hugging Face hub), or the path of an efficientnet_pytorch / smp state
            dict (.safetensors, .pth). Pretrained weights bring their normalization into the
            graph (ImageNet's; [-1, 1] for advprop), so inputs stay in [0, 1].
        input_normalization: "weights" or None (the caller normalizes, as with smp).
        input_range: None, or ``[low, high]`` mapped linearly to [0, 1] inside the model.
        name: prefix of every layer name.
    """


for _name, (_width, _depth, _size, _indexes, (_imagenet, _advprop)) in _VARIANTS.items():
    register_encoder(
        _name,
        strides=(2, 4, 8, 16, 32),
        tiny_config={"width_scale": 0.25},
        output_strides=(8, 16, 32),
        pretrained=True,
        description=(
            f"EfficientNet-{_name[-2:].upper()} (efficientnet_pytorch layout, width x{_width}, "
            f"depth x{_depth}, static padding for {_size} px); smp's weights imagenet, advprop."
        ),
    )(efficientnet_builder(_name, _plan(_name), _DOC.format(b=_name[-2:].upper(), name=_name)))
    pretrained.register_encoder_weights(
        _name,
        table="efficientnet",
        first_conv="_conv_stem",
        normalization=pretrained.IMAGENET,
        sources={
            weights: pretrained.smp_hub_source(
                _name,
                weights,
                _REVISIONS[revision],
                description=(
                    f"{what} weights of {_name} (efficientnet_pytorch's port of the TensorFlow "
                    f"originals), as segmentation_models_pytorch publishes them "
                    f"(smp-hub/{_name}.{weights})"
                ),
                license="Apache-2.0",
                normalization=normalization,
            )
            for weights, revision, what, normalization in (
                ("imagenet", _imagenet, "The ImageNet-1k", None),
                ("advprop", _advprop, "The AdvProp (adversarial examples) ImageNet-1k", ADVPROP),
            )
        },
    )
