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
from zoo.encoders._resnet_blocks import basic_block, bottleneck_block, stem
from zoo.registry import register_encoder


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
    deep_stem: bool = False,
    shortcut_kernel: int = 1,
    **block_kwargs,
) -> dict:
    """ResNet feature maps keyed by stride: {2, 4, 8, 16, 32} at output_stride 32; at 16
    (8) the last (two last) stages are dilated instead of strided, and the keys stop at 16
    (8). `normalization` (the pretrained weights' preprocessing) is applied first;
    `torch_padding` pads strided convs and the max-pool like PyTorch; `ceil_pool` pools as
    Caffe's SENets (no padding, ``ceil_mode``). Basic blocks, or with `bottleneck`
    `bottleneck_block`s (`block_kwargs`: `groups`, `width_per_group`, SENet's options).
    SENet-154: `deep_stem` (three 3x3 convs to ``2 * base_width`` channels) and
    `shortcut_kernel` 3 (the projections of stages 2-4)."""
    check_output_stride(output_stride)
    features = {}
    stem_width = 2 * base_width if deep_stem else base_width
    x = stem(x, stem_width, name, normalization, torch_padding, deep_stem)
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
                    shortcut_kernel=shortcut_kernel if stage else 1, **block_kwargs,
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
