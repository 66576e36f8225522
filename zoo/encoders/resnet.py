"""Native ResNet-18/34 encoders in the torchvision layout (basic blocks), and the stages
the deeper ResNets / ResNeXts share (`resnet_features` with ``bottleneck=True``, registered
in `zoo.encoders.resnet_bottleneck`).

Stem: 7x7/2 conv-BN-ReLU (stride 2) and a 3x3/2 max-pool; four stages of basic blocks with
64/128/256/512 channels (times ``base_width / 64``); a 1x1 conv + BN projection shortcut where
the shape changes. Convolutions before BN have no bias. Parameter counts equal torchvision's
(without the classifier), which the U-Net fidelity test relies on.

Reference:
    He et al., "Deep Residual Learning for Image Recognition", CVPR 2016.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras

from zoo import pretrained
from zoo.checks import check_positive, check_positive_int
from zoo.encoders._common import (
    apply_input_range,
    check_input_range,
    check_output_stride,
    run_encoder,
    weights_normalization,
)
from zoo.layers import (
    ChannelAffine,
    DilatedConv2D,
    FoldedOffset,
    GroupedConv2D,
    batch_norm,
    conv_bn_act,
    squeeze_excite,
)
from zoo.registry import register_encoder


def _conv_bn_act(
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
    y = _conv_bn_act(x, filters, 3, f"{name}_conv1", strides, dilation, torch_padding=torch_padding)
    y = conv_bn_act(y, filters, 3, f"{name}_conv2", dilation_rate=dilation, activation=None)
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.Activation("relu", name=f"{name}_relu")(y)


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
):
    """torchvision's Bottleneck (ResNet v1.5: the stride on the 3x3 conv): 1x1 conv-BN-ReLU
    to ``int(planes * width_per_group / 64) * groups`` channels, a 3x3 conv (in `groups`
    groups: ResNeXt) -BN-ReLU, a 1x1 conv-BN to ``4 * planes``; identity or 1x1 projection
    shortcut, add, ReLU. SENet's blocks: `se_reduction` squeezes and excites the residual
    before the add; `stride_on_1x1` strides the first 1x1 conv instead (Caffe's SE-ResNet)."""
    width = int(planes * width_per_group / 64) * groups
    filters = 4 * planes
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = keras.layers.Conv2D(
            filters, 1, strides=strides, use_bias=False, name=f"{name}_downsample_conv"
        )(x)
        shortcut = batch_norm(f"{name}_downsample_bn")(shortcut)
    y = conv_bn_act(x, width, 1, f"{name}_conv1", strides if stride_on_1x1 else 1)
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


def _stem(x, filters: int, name: str, normalization, torch_padding: bool):
    """7x7/2 conv-BN-ReLU, with the weights' normalization in front (or folded in)."""
    channels = int(x.shape[-1])
    if normalization is None or channels != 1:
        if normalization is not None:
            scale, offset = normalization.scale_offset(channels)
            x = ChannelAffine(scale, offset, name=f"{name}_preprocess")(x)
        return _conv_bn_act(x, filters, 7, f"{name}_stem", strides=2, torch_padding=torch_padding)
    # One channel: the RGB normalization is folded into the kernel and a fixed offset
    # (zoo.pretrained.adapt_input_kernel), exact at the zero-padded borders too.
    image = x
    x = keras.layers.ZeroPadding2D(3, name=f"{name}_stem_pad")(x)
    x = keras.layers.Conv2D(filters, 7, strides=2, use_bias=False, name=f"{name}_stem_conv")(x)
    x = FoldedOffset(7, strides=2, padding=3, name=f"{name}_stem_conv_offset")([x, image])
    x = batch_norm(f"{name}_stem_bn")(x)
    return keras.layers.Activation("relu", name=f"{name}_stem_relu")(x)


def resnet_features(
    x,
    blocks: Sequence[int],
    base_width: int = 64,
    output_stride: int = 32,
    name: str = "encoder",
    normalization: pretrained.Normalization | None = None,
    torch_padding: bool = False,
    bottleneck: bool = False,
    ceil_pool: bool = False,
    **block_kwargs,
) -> dict:
    """ResNet feature maps keyed by stride: {2, 4, 8, 16, 32} at output_stride 32; at 16
    (8) the last (two last) stages are dilated instead of strided, and the keys stop at 16
    (8). `normalization` (the pretrained weights' preprocessing) is applied first;
    `torch_padding` pads strided convs and the max-pool like PyTorch; `ceil_pool` pools as
    Caffe's SENets (no padding, ``ceil_mode``). Basic blocks, or with `bottleneck`
    `bottleneck_block`s (`block_kwargs`: `groups`, `width_per_group`, SENet's options)."""
    check_output_stride(output_stride)
    features = {}
    x = _stem(x, base_width, name, normalization, torch_padding)
    features[2] = x
    if ceil_pool:
        # ceil_mode without padding: one more window reaching past the bottom / right edge.
        x = keras.layers.ZeroPadding2D(((0, 1), (0, 1)), name=f"{name}_stem_pool_pad")(x)
        x = keras.layers.MaxPooling2D(3, strides=2, name=f"{name}_stem_pool")(x)
    elif torch_padding:
        # After a ReLU every value is >= 0, so zero padding is max-pool's -inf padding.
        x = keras.layers.ZeroPadding2D(1, name=f"{name}_stem_pool_pad")(x)
        x = keras.layers.MaxPooling2D(3, strides=2, name=f"{name}_stem_pool")(x)
    else:
        x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name=f"{name}_stem_pool")(x)
    stride, dilation = 4, 1
    for stage, num_blocks in enumerate(blocks):
        filters = base_width * 2**stage
        block_stride = 1 if stage == 0 else 2
        if stride * block_stride > output_stride:
            # Keep the resolution; dilate to keep the receptive field (DeepLab).
            dilation *= block_stride
            block_stride = 1
        stride *= block_stride
        for block in range(num_blocks):
            block_name = f"{name}_stage{stage + 1}_block{block + 1}"
            strides = block_stride if block == 0 else 1
            if bottleneck:
                x = bottleneck_block(
                    x, filters, strides, dilation, block_name, torch_padding=torch_padding,
                    **block_kwargs,
                )  # fmt: skip
            else:
                x = basic_block(x, filters, strides, dilation, block_name, torch_padding)
        features[stride] = x
    return features


def _resnet(
    encoder,
    blocks,
    inputs,
    input_shape,
    base_width,
    output_stride,
    weights,
    norm,
    name,
    span,
    **block_kwargs,
):
    check_positive("base_width", base_width)
    for key in ("groups", "width_per_group"):
        if key in block_kwargs:
            check_positive_int(key, block_kwargs[key])
    if block_kwargs and int(base_width * block_kwargs["width_per_group"] / 64) < 1:
        raise ValueError(
            "Invalid value for argument `width_per_group`: the first stage's bottleneck "
            f"width, int(base_width * width_per_group / 64), must be >= 1. Received: "
            f"width_per_group={block_kwargs['width_per_group']} with base_width={base_width}"
        )
    bounds = check_input_range(span)
    # Pretrained weights come from PyTorch: their normalization goes into the graph and the
    # strided convs pad like PyTorch. Random weights keep the original graph (and .keras
    # files saved before pretrained weights existed compute what they computed).
    normalization = weights_normalization(encoder, weights, norm)
    torch_padding = weights is not None

    def body(x):
        x = apply_input_range(x, bounds, name)  # before the weights' normalization
        features = resnet_features(
            x, blocks, int(base_width), output_stride, name, normalization, torch_padding,
            **block_kwargs,
        )  # fmt: skip
        pretrained.load_native(encoder, weights, x, features, name, normalization)
        return features

    return run_encoder(inputs, input_shape, name, body)


def bottleneck_builder(
    encoder: str, blocks: tuple[int, ...], groups: int, width: int, doc: str, **fixed
) -> Callable:
    """The registered builder of a bottleneck encoder (`resnet_bottleneck`, `senet`):
    `groups` / `width` are its defaults, `fixed` the `bottleneck_block` / stem options of
    its family (SENet's squeeze-and-excitation, stride, pool)."""

    def build(
        inputs=None,
        *,
        input_shape: Sequence[int | None] = (None, None, 3),
        base_width: int = 64,
        groups: int = groups,
        width_per_group: int = width,
        output_stride: int = 32,
        weights: str | None = None,
        input_normalization: str | None = "weights",
        input_range: Sequence[float] | None = None,
        name: str = "encoder",
    ):
        return _resnet(
            encoder, blocks, inputs, input_shape, base_width, output_stride, weights,
            input_normalization, name, input_range, bottleneck=True, groups=groups,
            width_per_group=width_per_group, **fixed,
        )  # fmt: skip

    build.__name__ = build.__qualname__ = encoder
    build.__doc__ = doc
    return build


TINY = {"base_width": 8}
# Bottleneck families' tiny configurations: grouped variants keep 4 groups.
TINY_GROUPED = {"base_width": 8, "groups": 4, "width_per_group": 16}


@register_encoder(
    "resnet18",
    strides=(2, 4, 8, 16, 32),
    tiny_config=TINY,
    output_strides=(8, 16, 32),
    pretrained=True,
    description="ResNet-18 (torchvision layout, basic blocks [2, 2, 2, 2]), 11.2M params.",
)
def resnet18(
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
    """ResNet-18 encoder. Returns ``{stride: features}`` for a tensor, or a `keras.Model`.

    Args:
        inputs: image tensor in [0, 1], or None to get a standalone model.
        input_shape: shape of the standalone model's input (any number of channels).
        base_width: channels of the stem and first stage (64 = torchvision).
        output_stride: 32, 16 or 8; below 32 the last stages use dilation.
        weights: None (random), "imagenet" (torchvision's ImageNet-1k weights, via timm on
            the Hugging Face hub) or the path of a torchvision / timm / segmentation_models_
            pytorch state dict (.safetensors, .pth). Pretrained weights bring their ImageNet
            normalization into the graph (inputs stay in [0, 1]) and PyTorch's padding of
            strided convs; a first conv for other than 3 channels is adapted
            (`zoo.pretrained.adapt_input_kernel`).
        input_normalization: "weights" (the pretrained weights' normalization inside the
            model, none for random weights) or None (never: the caller normalizes, as with
            segmentation_models_pytorch).
        input_range: None, or ``[low, high]``: intensities are mapped linearly so that low
            -> 0 and high -> 1, inside the model, before the weights' normalization (for data
            that use a small part of [0, 1], such as 12-bit counts in 16-bit files).
        name: prefix of every layer name.
    """
    return _resnet(
        "resnet18",
        (2, 2, 2, 2),
        inputs,
        input_shape,
        base_width,
        output_stride,
        weights,
        input_normalization,
        name,
        input_range,
    )


@register_encoder(
    "resnet34",
    strides=(2, 4, 8, 16, 32),
    tiny_config=TINY,
    output_strides=(8, 16, 32),
    pretrained=True,
    description="ResNet-34 (torchvision layout, basic blocks [3, 4, 6, 3]), 21.3M params.",
)
def resnet34(
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
    """ResNet-34 encoder; arguments as `resnet18`."""
    return _resnet(
        "resnet34",
        (3, 4, 6, 3),
        inputs,
        input_shape,
        base_width,
        output_stride,
        weights,
        input_normalization,
        name,
        input_range,
    )


for _name in ("resnet18", "resnet34"):
    pretrained.register_encoder_weights(
        _name,
        table="resnet",
        first_conv="conv1",
        normalization=pretrained.IMAGENET,
        sources={
            "imagenet": pretrained.WeightsSource(
                url=f"https://huggingface.co/timm/{_name}.tv_in1k/resolve/main/model.safetensors",
                file=f"timm/{_name}.tv_in1k/model.safetensors",
                description=(
                    f"torchvision's ImageNet-1k {_name} weights (IMAGENET1K_V1) as "
                    f"republished by timm ({_name}.tv_in1k)"
                ),
                license="BSD-3-Clause (torchvision)",
            )
        },
    )
