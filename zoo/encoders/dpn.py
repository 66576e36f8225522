"""Native Dual Path Network encoders in the layout of Cadene's pretrainedmodels, as smp's
``dpn68``, ``dpn68b``, ``dpn92``, ``dpn98``, ``dpn107`` and ``dpn131``.

A stem (conv-BN-ReLU, 3x3/2 for DPN-68, 7x7/2 otherwise, then a 3x3/2 max-pool) and four
stages of dual path blocks. A block carries two paths: a residual one (``bw`` channels,
added to) and a densely connected one (grown by ``inc`` channels per block). It runs three
pre-activation units (BN-ReLU-conv: 1x1 to ``r`` channels, 3x3 in `groups` groups, 1x1 to
``bw + inc``) on their concatenation; the first ``bw`` output channels are added to the
residual path, the last ``inc`` appended to the dense one. A stage's first block starts both
paths afresh from a pre-activation 1x1 projection (``bw + 2 * inc`` channels), strided in
stages 2-4. DPN-68b's third unit is BN-ReLU and two 1x1 convs. Here every 1x1 conv whose
output the reference slices between the paths is two convs (``..._proj1`` / ``..._c1``: the
residual channels, ``..._proj2`` / ``..._c2``: the dense ones), the same function; the port
table splits the reference's weight. Layers: ``{name}_stem_...``, ``{name}_stage{s}_block{i}
_{proj,a,b,c}_{bn,relu,conv}``, ``{name}_stage{s}_concat`` / ``_relu``, ``{name}_final_...``.
Feature maps are smp's: the stem's ReLU (stride 2), the ReLU of each of
stages 1-3's concatenated paths (strides 4, 8, 16) and the final BN-ReLU (stride 32).
Output strides 16 and 8 as smp's ``make_dilated``: the last (two last) stages unstrided,
every 3x3 conv of a stage dilated by ``stride / output_stride``. Strided convs pad as
PyTorch does (explicitly, then "valid"); the stem's pool follows a ReLU, so zero padding is
PyTorch's -inf. Batch norms use the reference's epsilon, 1e-3. Checkpoint keys:
``features.conv1_1.conv``, ``features.conv{2-5}_{i}.c1x1_a.bn`` ... (the ``dpn`` port table;
DPN-68b's the ``dpn_b`` one).

Reference:
    Chen et al., "Dual Path Networks", NeurIPS 2017.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import keras

from zoo import pretrained
from zoo.checks import check_positive_int, check_positive_ints
from zoo.encoders._common import (
    check_output_stride,
    native_encoder,
)
from zoo.layers import DilatedConv2D, GroupedConv2D, batch_norm
from zoo.registry import register_encoder

BN_EPSILON = 1e-3  # the reference's nn.BatchNorm2d(..., eps=0.001)

# The pretrained weights' preprocessing (MXNet's): mean 124, 117, 104 and scale 0.0167 in
# 0-255 units, the same for every DPN file smp publishes.
NORMALIZATION = pretrained.Normalization(
    mean=(124 / 255, 117 / 255, 104 / 255), std=(1 / (0.0167 * 255),) * 3
)


class Variant(NamedTuple):
    """One DPN of smp's: the reference's constructor arguments and smp's weights."""

    small: bool  # DPN-68: 3x3 stem, stage widths 64-512 (else 7x7, 256-2048)
    num_init_features: int
    k_r: int  # the bottleneck width r of stage 1 (doubling per stage)
    groups: int
    b: bool  # DPN-68b's third unit
    k_sec: tuple[int, int, int, int]  # blocks per stage
    inc_sec: tuple[int, int, int, int]  # dense channels added per block
    weights: str  # smp's name of its weights
    revision: str  # the smp-hub revision smp 0.6 pins


VARIANTS: dict[str, Variant] = {
    "dpn68": Variant(
        True, 10, 128, 32, False, (3, 4, 12, 3), (16, 32, 32, 64),
        "imagenet", "c209aefdeae6bc93937556629e974b44d4e58535",
    ),
    "dpn68b": Variant(
        True, 10, 128, 32, True, (3, 4, 12, 3), (16, 32, 32, 64),
        "imagenet+5k", "6c6615e77688e390ae0eaa81e26821fbd83cee4b",
    ),
    "dpn92": Variant(
        False, 64, 96, 32, False, (3, 4, 20, 3), (16, 32, 24, 128),
        "imagenet+5k", "d231f51ce4ad2c84ed5fcaf4ef0cfece6814a526",
    ),
    "dpn98": Variant(
        False, 96, 160, 40, False, (3, 6, 20, 3), (16, 32, 32, 128),
        "imagenet", "b2836c86216c1ddce980d832f7deaa4ca22babd3",
    ),
    "dpn107": Variant(
        False, 128, 200, 50, False, (4, 8, 20, 3), (20, 64, 64, 128),
        "imagenet+5k", "dab4cd6b8b79de3db970f2dbff85359a8847db05",
    ),
    "dpn131": Variant(
        False, 128, 160, 40, False, (4, 8, 28, 3), (16, 32, 32, 128),
        "imagenet", "04bbb9f415ca2bb59f3d8227857967b74698515e",
    ),
}  # fmt: skip
# Narrow, and two blocks per stage (a projection and a plain block each): a U-Net on it
# compiles its training step in a third of full depth's time.
TINY = {
    "num_init_features": 8,
    "base_width": 16,
    "k_r": 8,
    "groups": 4,
    "k_sec": (2, 2, 2, 2),
    "inc_sec": (4, 4, 4, 8),
}


def _bn_relu(x, name: str):
    x = batch_norm(f"{name}_bn", epsilon=BN_EPSILON)(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def _conv(x, filters: int, kernel: int, name: str, strides=1, dilation=1, groups=1):
    """A bias-free conv padded as PyTorch's ``padding=kernel // 2 * dilation``."""
    padding = "same"
    if strides > 1 and kernel > 1:
        x = keras.layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
    if strides > 1:
        padding = "valid"  # a strided 1x1 conv: pixels 0, 2, 4, ... as PyTorch's
    if groups > 1:
        conv = GroupedConv2D
    elif dilation > 1 and kernel > 1:
        conv = DilatedConv2D
    else:
        conv = keras.layers.Conv2D
    return conv(
        filters,
        kernel,
        strides=strides,
        padding=padding,
        dilation_rate=dilation if kernel > 1 else 1,
        groups=groups,
        use_bias=False,
        name=f"{name}_conv",
    )(x)


def dual_path_block(
    x,
    bw: int,
    inc: int,
    r: int,
    groups: int,
    name: str,
    project: bool = False,
    strides: int = 1,
    dilation: int = 1,
):
    """The reference's ``DualPathBlock``; returns its ``(residual, dense)`` paths.

    Args:
        x: the previous block's ``(residual, dense)`` paths or, with `project`, one tensor
            (both paths concatenated, or the stem's) that a BN-ReLU-1x1 projection turns
            into new paths (the reference's "proj" / "down" block).
        bw: residual-path channels.
        inc: dense-path channels this block adds (the projection starts with ``2 * inc``).
        r: bottleneck channels (the 1x1 and grouped 3x3 convs).
        groups: groups of the 3x3 conv.
        name: prefix of the block's layer names.
        project: whether this is a stage's first block.
        strides: of the projection and the 3x3 conv (2: a "down" block).
        dilation: of the 3x3 conv (smp's ``make_dilated``).
    """
    if project:
        x_in = x
        y = _bn_relu(x_in, f"{name}_proj")
        residual = _conv(y, bw, 1, f"{name}_proj1", strides)
        dense = _conv(y, 2 * inc, 1, f"{name}_proj2", strides)
    else:
        residual, dense = x
        x_in = keras.layers.Concatenate(name=f"{name}_concat")([residual, dense])
    y = _conv(_bn_relu(x_in, f"{name}_a"), r, 1, f"{name}_a")
    y = _conv(_bn_relu(y, f"{name}_b"), r, 3, f"{name}_b", strides, dilation, groups)
    y = _bn_relu(y, f"{name}_c")
    residual = keras.layers.Add(name=f"{name}_add")([residual, _conv(y, bw, 1, f"{name}_c1")])
    dense = keras.layers.Concatenate(name=f"{name}_dense")([dense, _conv(y, inc, 1, f"{name}_c2")])
    return residual, dense


def dpn_features(
    x,
    small: bool,
    num_init_features: int,
    base_width: int,
    k_r: int,
    groups: int,
    k_sec: Sequence[int],
    inc_sec: Sequence[int],
    output_stride: int = 32,
    name: str = "encoder",
) -> dict:
    """DPN feature maps keyed by stride: {2, 4, 8, 16, 32} at output stride 32; at 16 (8)
    the last (two last) stages are dilated instead of strided and the keys stop at 16 (8),
    the deepest map there (smp's choice of tensors).

    Args:
        x: the (normalized) image tensor.
        small: DPN-68's 3x3 stem (else 7x7).
        num_init_features: stem channels.
        base_width: stage 1's residual-path channels (doubling per stage).
        k_r: stage 1's bottleneck channels (doubling per stage).
        groups: groups of the 3x3 convs.
        k_sec: blocks of stages 1-4.
        inc_sec: dense-path channels each block of stages 1-4 adds.
        output_stride: 32, 16 or 8.
        name: prefix of every layer name.
    """
    kernel = 3 if small else 7
    x = keras.layers.ZeroPadding2D(kernel // 2, name=f"{name}_stem_pad")(x)
    x = keras.layers.Conv2D(
        num_init_features, kernel, strides=2, use_bias=False, name=f"{name}_stem_conv"
    )(x)
    x = _bn_relu(x, f"{name}_stem")
    features = {2: x}
    # After a ReLU every value is >= 0, so zero padding is max-pool's -inf padding.
    x = keras.layers.ZeroPadding2D(1, name=f"{name}_stem_pool_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name=f"{name}_stem_pool")(x)
    stride, dilation = 4, 1
    for s, (blocks, inc) in enumerate(zip(k_sec, inc_sec, strict=True), start=1):
        strides = 1 if s == 1 else 2
        if stride * strides > output_stride:  # keep the resolution, dilate (DeepLab)
            dilation *= strides
            strides = 1
        stride *= strides
        bw, r = base_width * 2 ** (s - 1), k_r * 2 ** (s - 1)
        for i in range(1, blocks + 1):
            x = dual_path_block(
                x, bw, inc, r, groups, f"{name}_stage{s}_block{i}", project=i == 1,
                strides=strides if i == 1 else 1, dilation=dilation,
            )  # fmt: skip
        x = keras.layers.Concatenate(name=f"{name}_stage{s}_concat")(list(x))
        if s < len(k_sec):
            features[stride] = keras.layers.ReLU(name=f"{name}_stage{s}_relu")(x)
        else:
            features[stride] = _bn_relu(x, f"{name}_final")
    return features


def params(
    small: bool,
    num_init_features: int,
    k_r: int,
    groups: int,
    k_sec: Sequence[int],
    inc_sec: Sequence[int],
    base_width: int | None = None,
) -> int:
    """Parameters of the reference's ``DPN.features`` (BN: scale and offset).

    Args:
        small, num_init_features, k_r, groups, k_sec, inc_sec: the reference's ``DPN``
            arguments.
        base_width: stage 1's residual-path channels; None: the reference's (64 for
            `small`, else 256).
    """
    base_width = base_width or (64 if small else 256)
    kernel = 3 if small else 7
    total = kernel * kernel * 3 * num_init_features + 2 * num_init_features
    channels = num_init_features
    for s, (blocks, inc) in enumerate(zip(k_sec, inc_sec, strict=True)):
        bw, r = base_width * 2**s, k_r * 2**s
        total += 2 * channels + channels * (bw + 2 * inc)  # the projection
        for i in range(blocks):
            total += 2 * channels + channels * r  # a
            total += 2 * r + 9 * r * r // groups  # b
            total += 2 * r + r * (bw + inc)  # c
            channels = (channels if i else bw + 2 * inc) + inc  # the paths' channels
    return total + 2 * channels  # the final BN


_DOC = """{title} encoder: ``{{stride: features}}`` for a tensor, or a `keras.Model`.

    Args:
        inputs: image tensor in [0, 1], or None to get a standalone model.
        input_shape: shape of the standalone model's input (any number of channels).
        num_init_features: channels of the stem conv ({stem} = the original).
        base_width: stage 1's residual-path channels, doubling per stage ({bw} = the
            original).
        k_r: stage 1's bottleneck (3x3 conv) channels, doubling per stage ({k_r} = the
            original); a multiple of `groups`.
        groups: groups of the 3x3 convs ({groups} = the original).
        k_sec: dual path blocks of stages 1-4 ({blocks} = the original).
        inc_sec: dense-path channels each block of stages 1-4 adds ({inc} = the original).
        output_stride: 32, 16 or 8; below 32 the last stages use dilation (as smp's).
        weights: None (random), "{weights}" (pretrainedmodels' weights, converted from the
            original MXNet ones, as segmentation_models_pytorch publishes them, from the
            Hugging Face hub) or the path of a pretrainedmodels / smp state dict
            (.safetensors, .pth). Pretrained weights bring their normalization (mean 124,
            117, 104 and scale 0.0167 on 0-255 values) into the graph (inputs stay in [0, 1]).
        input_normalization: "weights", "imagenet" (ImageNet's mean and std whatever the
            weights, e.g. an smp model trained with ImageNet statistics) or None (the caller
            normalizes, as with smp).
        input_range: None, or ``[low, high]``: intensities mapped linearly so that low -> 0
            and high -> 1, inside the model, before the weights' normalization.
        name: prefix of every layer name.
    """


def _builder(encoder: str) -> Callable:
    v = VARIANTS[encoder]
    default_bw = 64 if v.small else 256

    def build(
        inputs=None,
        *,
        input_shape: Sequence[int | None] = (None, None, 3),
        num_init_features: int = v.num_init_features,
        base_width: int = default_bw,
        k_r: int = v.k_r,
        groups: int = v.groups,
        k_sec: Sequence[int] = v.k_sec,
        inc_sec: Sequence[int] = v.inc_sec,
        output_stride: int = 32,
        weights: str | None = None,
        input_normalization: str | None = "weights",
        input_range: Sequence[float] | None = None,
        name: str = "encoder",
    ):
        for key, value in (
            ("num_init_features", num_init_features),
            ("base_width", base_width),
            ("k_r", k_r),
            ("groups", groups),
        ):
            check_positive_int(key, value)
        if k_r % groups:
            raise ValueError(
                "Invalid value for argument `k_r`: expected a multiple of `groups` "
                f"({groups}), the 3x3 convs' groups. Received: k_r={k_r!r}"
            )
        blocks = check_positive_ints("k_sec", list(k_sec), 4)
        incs = check_positive_ints("inc_sec", list(inc_sec), 4)
        check_output_stride(output_stride)
        return native_encoder(
            encoder, inputs, input_shape, weights, input_normalization, input_range, name,
            lambda x: dpn_features(
                x, v.small, num_init_features, base_width, k_r, groups, blocks, incs,
                output_stride, name,
            ),
        )  # fmt: skip

    build.__name__ = build.__qualname__ = encoder
    build.__doc__ = _DOC.format(
        title=f"DPN-{encoder[3:]}", stem=v.num_init_features, bw=default_bw, k_r=v.k_r,
        groups=v.groups, blocks=v.k_sec, inc=v.inc_sec, weights=v.weights,
    )  # fmt: skip
    return build


for _name, _v in VARIANTS.items():
    _total = params(_v.small, _v.num_init_features, _v.k_r, _v.groups, _v.k_sec, _v.inc_sec)
    register_encoder(
        _name,
        strides=(2, 4, 8, 16, 32),
        tiny_config=TINY,
        output_strides=(8, 16, 32),
        pretrained=True,
        description=(
            f"DPN-{_name[3:]} (pretrainedmodels layout, dual path blocks {list(_v.k_sec)}, "
            f"{_v.groups} groups), {_total / 1e6:.1f}M params; smp's weights {_v.weights}."
        ),
    )(_builder(_name))
    _repo = f"{_name}.{_v.weights.replace('+', '-')}"
    _data = "ImageNet-5k pretrained, ImageNet-1k fine-tuned" if "+" in _v.weights else "ImageNet-1k"
    pretrained.register_encoder_weights(
        _name,
        table="dpn_b" if _v.b else "dpn",
        first_conv="features.conv1_1.conv",
        normalization=NORMALIZATION,
        sources={
            _v.weights: pretrained.smp_hub_source(
                _name,
                _v.weights,
                _v.revision,
                description=(
                    f"The {_data} {_name} weights (Chen et al.'s MXNet ones as converted by "
                    f"pretrainedmodels), as segmentation_models_pytorch publishes them "
                    f"(smp-hub/{_repo})"
                ),
                license="none stated (cypw/DPNs' MXNet weights) / BSD-3-Clause (pretrainedmodels)",
            )
        },
    )
