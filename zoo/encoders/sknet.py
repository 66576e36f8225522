"""Native selective-kernel ResNets in timm's layout, as smp's ``timm-skresnet18``,
``timm-skresnet34`` and ``timm-skresnext50_32x4d``.

timm's ``ResNet`` with ``SelectiveKernelBasic`` / ``SelectiveKernelBottleneck`` blocks and smp's
block arguments: a 7x7/2 conv-BN-ReLU stem (the stride-2 feature) and a 3x3/2 max-pool, four
stages (64/128/256/512 planes; expansion 1 or 4), a 1x1 conv-BN projection shortcut where
the shape changes. A selective-kernel convolution (the basic block's first 3x3 conv, the
bottleneck's middle one) splits its input channels in two halves (smp's ``split_input``,
timm's default), runs a 3x3 conv-BN-ReLU on the first and a 3x3 conv with dilation 2 on the
second (both to the full width, in the ResNeXt's 32 groups), sums them, pools the sum
globally, maps it through a 1x1 conv-BN-ReLU (to ``make_divisible(width * rd_ratio, 8)``
channels: rd_ratio 1/8 for the basic blocks, 1/16 for the ResNeXt) and a 1x1 conv to two
logits per channel, and adds the paths weighted by their softmax (`SelectiveKernelAttention`).

Every conv pads as timm does (symmetric ``((stride - 1) + dilation * (k - 1)) // 2``: a
dilation-2 path with stride 2 reads the even pixels only, so it is computed as a 3x3 conv on
the image subsampled by 2). Output stride 16 / 8: smp's ``make_dilated`` sets every conv of
stage 4 (stages 3 and 4) to stride 1 and the stage's dilation (2; 2 and 4), both selective
paths included (they then have the same dilation). Checkpoint keys are timm's (``conv1``,
``layer1.0.conv1.paths.0.conv``, ``...attn.fc_reduce``: the ``sknet`` port table).

Reference:
    Li et al., "Selective Kernel Networks", CVPR 2019.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras

from zoo import pretrained
from zoo.checks import check_positive_int
from zoo.encoders._common import (
    check_output_stride,
    native_encoder,
)
from zoo.encoders._resnet_blocks import torch_conv_bn_act
from zoo.layers import DilatedConv2D, GroupedConv2D, batch_norm, conv_bn_act
from zoo.layers.selective_kernel_attention import SelectiveKernelAttention
from zoo.registry import register_encoder

# name -> (blocks per stage, bottleneck, groups, width per group, rd_ratio, smp-hub revision
# of "imagenet", parameters in millions).
VARIANTS: dict[str, tuple[tuple[int, ...], bool, int, int, float, str, float]] = {
    "timm-skresnet18": (
        (2, 2, 2, 2), False, 1, 64, 1 / 8, "6c97652bb744d89177b68274d2fda3923a7d1f95", 11.4
    ),
    "timm-skresnet34": (
        (3, 4, 6, 3), False, 1, 64, 1 / 8, "2367796924a8182cc835ef6b5dc303917f923f99", 21.8
    ),
    "timm-skresnext50_32x4d": (
        (3, 4, 6, 3), True, 32, 4, 1 / 16, "50207e407cc4c6ea9e6872963db6844ca7b7b9de", 23.9
    ),
}  # fmt: skip
TINY = {"base_width": 8}
TINY_GROUPED = {"base_width": 8, "groups": 4, "width_per_group": 16}


def make_divisible(value: float, divisor: int = 8) -> int:
    """timm's ``make_divisible``: the nearest multiple of `divisor` (at least `divisor`), one
    more when rounding down lost over 10%."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * value else new


def _conv(filters: int, strides: int, dilation: int, groups: int, padding: str, name: str):
    """The 3x3 conv: grouped (TensorFlow's own grouped kernel), dilated or plain."""
    conv = GroupedConv2D if groups > 1 else DilatedConv2D if dilation > 1 else keras.layers.Conv2D
    return conv(
        filters, 3, strides=strides, padding=padding, dilation_rate=dilation, groups=groups,
        use_bias=False, name=name,
    )  # fmt: skip


def _path(x, filters: int, strides: int, dilation: int, groups: int, name: str):
    """One path: 3x3 conv (timm's symmetric padding, `dilation` pixels) -BN-ReLU."""
    if strides == 1:
        x = _conv(filters, 1, dilation, groups, "same", f"{name}_conv")(x)
    elif dilation == 1:
        x = keras.layers.ZeroPadding2D(1, name=f"{name}_pad")(x)
        x = _conv(filters, strides, 1, groups, "valid", f"{name}_conv")(x)
    else:
        # Stride s, dilation s, padding s: output i reads pixels s * (i - 1), s * i,
        # s * (i + 1), i.e. a 3x3 conv padded by 1 on every s-th pixel (a 1x1 pool picks them).
        if dilation != strides:
            raise ValueError(f"no strided path with dilation {dilation} != stride {strides}")
        x = keras.layers.MaxPooling2D(1, strides=strides, name=f"{name}_subsample")(x)
        x = _conv(filters, 1, 1, groups, "same", f"{name}_conv")(x)
    x = batch_norm(f"{name}_bn")(x)
    return keras.layers.Activation("relu", name=f"{name}_relu")(x)


def selective_kernel(
    x, filters: int, strides: int, dilation: int, groups: int, rd_ratio: float, name: str
):
    """timm's ``SelectiveKernel`` (kernel sizes 3 and 5 as 3x3 convs with dilation 1 and 2,
    ``split_input``); with `dilation` > 1 (smp's ``make_dilated``) both paths have it."""
    half = int(x.shape[-1]) // 2
    dilations = (1, 2) if dilation == 1 else (dilation, dilation)
    paths = []
    for p, crop in enumerate(((0, half), (half, 0))):
        # The channels-last map read as channels-first: this crops the channel axis, a plain
        # slice of the input (any height and width), instead of a custom or Lambda layer.
        part = keras.layers.Cropping2D(
            ((0, 0), crop), data_format="channels_first", name=f"{name}_path{p}_split"
        )(x)
        paths.append(_path(part, filters, strides, dilations[p], groups, f"{name}_path{p}"))
    a = keras.layers.Add(name=f"{name}_attn_sum")(paths)
    a = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_attn_pool")(a)
    a = keras.layers.Conv2D(
        make_divisible(filters * rd_ratio), 1, use_bias=False, name=f"{name}_attn_fc_reduce"
    )(a)
    a = batch_norm(f"{name}_attn_bn")(a)
    a = keras.layers.Activation("relu", name=f"{name}_attn_relu")(a)
    a = keras.layers.Conv2D(len(paths) * filters, 1, use_bias=False, name=f"{name}_attn_fc_select")(
        a
    )
    return SelectiveKernelAttention(len(paths), name=f"{name}_attn_select")([a, *paths])


def sk_block(
    x,
    planes: int,
    strides: int,
    dilation: int,
    name: str,
    bottleneck: bool,
    groups: int = 1,
    width_per_group: int = 64,
    rd_ratio: float = 1 / 8,
):
    """timm's ``SelectiveKernelBasic`` (selective kernel, 3x3 conv-BN: `planes` channels)
    or ``SelectiveKernelBottleneck`` (1x1 conv-BN-ReLU to ``int(planes * width_per_group /
    64) * groups`` channels, grouped selective kernel, 1x1 conv-BN to ``4 * planes``);
    identity or 1x1 conv-BN projection shortcut, add, ReLU."""
    filters = 4 * planes if bottleneck else planes
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = keras.layers.Conv2D(
            filters, 1, strides=strides, use_bias=False, name=f"{name}_downsample_conv"
        )(x)
        shortcut = batch_norm(f"{name}_downsample_bn")(shortcut)
    if bottleneck:
        width = int(planes * width_per_group / 64) * groups
        y = conv_bn_act(x, width, 1, f"{name}_conv1")
        y = selective_kernel(y, width, strides, dilation, groups, rd_ratio, f"{name}_conv2")
        y = conv_bn_act(y, filters, 1, f"{name}_conv3", activation=None)
    else:
        y = selective_kernel(x, planes, strides, dilation, 1, rd_ratio, f"{name}_conv1")
        y = conv_bn_act(y, planes, 3, f"{name}_conv2", dilation_rate=dilation, activation=None)
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.Activation("relu", name=f"{name}_relu")(y)


def sknet_features(
    x,
    blocks: Sequence[int],
    bottleneck: bool,
    base_width: int = 64,
    output_stride: int = 32,
    name: str = "encoder",
    **block_kwargs,
) -> dict:
    """Feature maps keyed by stride: {2, 4, 8, 16, 32} at output_stride 32; at 16 (8) the
    last (two last) stages are dilated instead of strided, and the keys stop at 16 (8).
    `block_kwargs`: `sk_block`'s `groups`, `width_per_group`, `rd_ratio`."""
    x = torch_conv_bn_act(x, base_width, 7, f"{name}_stem", strides=2, torch_padding=True)
    features = {2: x}
    # After a ReLU every value is >= 0, so zero padding is max-pool's -inf padding.
    x = keras.layers.ZeroPadding2D(1, name=f"{name}_stem_pool_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name=f"{name}_stem_pool")(x)
    stride, dilation = 4, 1
    for stage, num_blocks in enumerate(blocks):
        block_stride = 1 if stage == 0 else 2
        if stride * block_stride > output_stride:
            dilation *= block_stride  # smp's make_dilated: stride 1, dilation instead
            block_stride = 1
        stride *= block_stride
        for block in range(num_blocks):
            x = sk_block(
                x, base_width * 2**stage, block_stride if block == 0 else 1, dilation,
                f"{name}_stage{stage + 1}_block{block + 1}", bottleneck, **block_kwargs,
            )  # fmt: skip
        features[stride] = x
    return features


def _check_widths(base_width: int, groups: int, width_per_group: int, bottleneck: bool) -> None:
    """The selective kernels split their input in halves, each conv'd in `groups` groups."""
    for stage in range(4):
        planes = base_width * 2**stage
        width = int(planes * width_per_group / 64) * groups if bottleneck else planes
        if width % (2 * groups):
            names, values = "`base_width`", f"base_width={base_width}"
            if bottleneck:
                names += " / `groups` / `width_per_group`"
                values += f", groups={groups}, width_per_group={width_per_group}"
            raise ValueError(
                f"Invalid value for argument {names}: every selective kernel's input must "
                f"split into two halves of whole groups; stage {stage + 1} has {width} channels"
                f" for {groups} groups. Received: {values}"
            )


_DOC = """{title} encoder (smp's ``{name}``): ``{{stride: features}}`` for a tensor, or a
    `keras.Model`.

    Args:
        inputs: image tensor in [0, 1], or None to get a standalone model.
        input_shape: shape of the standalone model's input (any number of channels).
        base_width: channels of the stem and planes of the first stage (64 = the original).{extra}
        output_stride: 32, 16 or 8; below 32 the last stages are dilated as smp dilates them.
        weights: None (random), "imagenet" (timm's ImageNet-1k weights as
            segmentation_models_pytorch publishes them, from the Hugging Face hub) or the path
            of a timm / smp state dict (.safetensors, .pth). Pretrained weights bring their
            ImageNet normalization into the graph (inputs stay in [0, 1]).
        input_normalization: "weights" or None (the caller normalizes, as with smp).
        input_range: None, or ``[low, high]``: intensities mapped linearly so that low -> 0
            and high -> 1, inside the model, before the weights' normalization.
        name: prefix of every layer name.
    """
_GROUPED_DOC = """
        groups: groups of the selective kernels' convs (32 = the original).
        width_per_group: channels per group in the first stage (4 = the original)."""


def _build(encoder: str, inputs, input_shape, base_width, groups, width_per_group, **rest):
    blocks, bottleneck, _, _, rd_ratio, _, _ = VARIANTS[encoder]
    for key, value in (
        ("base_width", base_width),
        ("groups", groups),
        ("width_per_group", width_per_group),
    ):
        check_positive_int(key, value)
    _check_widths(base_width, groups, width_per_group, bottleneck)
    check_output_stride(rest["output_stride"])
    name = rest["name"]
    return native_encoder(
        encoder, inputs, input_shape, rest["weights"], rest["input_normalization"],
        rest["input_range"], name,
        lambda x: sknet_features(
            x, blocks, bottleneck, base_width, rest["output_stride"], name, groups=groups,
            width_per_group=width_per_group, rd_ratio=rd_ratio,
        ),
    )  # fmt: skip


def _builder(encoder: str) -> Callable:
    bottleneck, default_groups, default_width = VARIANTS[encoder][1:4]

    def basic(
        inputs=None,
        *,
        input_shape: Sequence[int | None] = (None, None, 3),
        base_width: int = 64,
        output_stride: int = 32,
        weights: str | None = None,
        input_normalization: str | None = "weights",
        input_range: Sequence[float] | None = None,
        name: str = "encoder",
    ):
        return _build(
            encoder, inputs, input_shape, base_width, 1, 64, output_stride=output_stride,
            weights=weights, input_normalization=input_normalization,
            input_range=input_range, name=name,
        )  # fmt: skip

    def grouped(
        inputs=None,
        *,
        input_shape: Sequence[int | None] = (None, None, 3),
        base_width: int = 64,
        groups: int = default_groups,
        width_per_group: int = default_width,
        output_stride: int = 32,
        weights: str | None = None,
        input_normalization: str | None = "weights",
        input_range: Sequence[float] | None = None,
        name: str = "encoder",
    ):
        return _build(
            encoder, inputs, input_shape, base_width, groups, width_per_group,
            output_stride=output_stride, weights=weights,
            input_normalization=input_normalization, input_range=input_range, name=name,
        )  # fmt: skip

    build = grouped if bottleneck else basic
    build.__name__ = build.__qualname__ = encoder.replace("-", "_")
    build.__doc__ = _DOC.format(
        title=TITLES[encoder], name=encoder, extra=_GROUPED_DOC if bottleneck else ""
    )
    return build


TITLES = {
    "timm-skresnet18": "SK-ResNet-18",
    "timm-skresnet34": "SK-ResNet-34",
    "timm-skresnext50_32x4d": "SK-ResNeXt-50 32x4d",
}

for _name, (_blocks, _bottleneck, _groups, _width, _ratio, _revision, _m) in VARIANTS.items():
    _kind = "bottleneck" if _bottleneck else "basic"
    _grouped = f", {_groups} groups x {_width} channels" if _groups > 1 else ""
    register_encoder(
        _name,
        strides=(2, 4, 8, 16, 32),
        tiny_config=TINY_GROUPED if _bottleneck else TINY,
        output_strides=(8, 16, 32),
        pretrained=True,
        description=(
            f"{TITLES[_name]} (timm layout as smp builds it, selective-kernel {_kind} blocks "
            f"{list(_blocks)}{_grouped}), {_m}M params; smp's weights imagenet."
        ),
    )(_builder(_name))
    pretrained.register_encoder_weights(
        _name,
        table="sknet",
        first_conv="conv1",
        normalization=pretrained.IMAGENET,
        sources={
            "imagenet": pretrained.smp_hub_source(
                _name,
                "imagenet",
                _revision,
                description=(
                    f"timm's ImageNet-1k {_name[5:]} weights, as segmentation_models_pytorch "
                    f"publishes them (smp-hub/{_name}.imagenet)"
                ),
                license="Apache-2.0 (timm)",
            )
        },
    )
