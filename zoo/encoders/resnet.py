"""Native ResNet-18/34 encoders in the torchvision layout (basic blocks).

Stem: 7x7/2 conv-BN-ReLU (stride 2) and a 3x3/2 max-pool; four stages of basic blocks with
64/128/256/512 channels (times ``base_width / 64``); a 1x1 conv + BN projection shortcut where
the shape changes. Convolutions before BN have no bias. Parameter counts equal torchvision's
(without the classifier), which the U-Net fidelity test relies on.

Reference:
    He et al., "Deep Residual Learning for Image Recognition", CVPR 2016.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from zoo.checks import check_positive
from zoo.encoders._common import check_output_stride, run_encoder
from zoo.layers import batch_norm, conv_bn_act
from zoo.registry import register_encoder


def basic_block(x, filters: int, strides: int, dilation: int, name: str):
    """Two 3x3 conv-BN (ReLU between), identity or 1x1 projection shortcut, add, ReLU."""
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = keras.layers.Conv2D(
            filters, 1, strides=strides, use_bias=False, name=f"{name}_downsample_conv"
        )(x)
        shortcut = batch_norm(f"{name}_downsample_bn")(shortcut)
    y = conv_bn_act(x, filters, 3, f"{name}_conv1", strides=strides, dilation_rate=dilation)
    y = conv_bn_act(y, filters, 3, f"{name}_conv2", dilation_rate=dilation, activation=None)
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.Activation("relu", name=f"{name}_relu")(y)


def resnet_features(
    x,
    blocks: Sequence[int],
    base_width: int = 64,
    output_stride: int = 32,
    name: str = "encoder",
) -> dict:
    """ResNet (basic blocks) feature maps keyed by stride: {2, 4, 8, 16, 32} at
    output_stride 32; at 16 (8) the last (two last) stages are dilated instead of strided,
    and the keys stop at 16 (8)."""
    check_output_stride(output_stride)
    features = {}
    x = conv_bn_act(x, base_width, 7, f"{name}_stem", strides=2)
    features[2] = x
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
            x = basic_block(
                x,
                filters,
                block_stride if block == 0 else 1,
                dilation,
                name=f"{name}_stage{stage + 1}_block{block + 1}",
            )
        features[stride] = x
    return features


def _resnet(blocks, inputs, input_shape, base_width, output_stride, name):
    check_positive("base_width", base_width)
    return run_encoder(
        inputs,
        input_shape,
        name,
        lambda x: resnet_features(x, blocks, int(base_width), output_stride, name),
    )


_TINY = {"base_width": 8}


@register_encoder(
    "resnet18",
    strides=(2, 4, 8, 16, 32),
    tiny_config=_TINY,
    output_strides=(8, 16, 32),
    pretrained=False,
    description="ResNet-18 (torchvision layout, basic blocks [2, 2, 2, 2]), 11.2M params.",
)
def resnet18(
    inputs=None,
    *,
    input_shape: Sequence[int | None] = (None, None, 3),
    base_width: int = 64,
    output_stride: int = 32,
    name: str = "encoder",
):
    """ResNet-18 encoder. Returns ``{stride: features}`` for a tensor, or a `keras.Model`.

    Args:
        inputs: image tensor, or None to get a standalone model.
        input_shape: shape of the standalone model's input.
        base_width: channels of the stem and first stage (64 = torchvision).
        output_stride: 32, 16 or 8; below 32 the last stages use dilation.
        name: prefix of every layer name.
    """
    return _resnet((2, 2, 2, 2), inputs, input_shape, base_width, output_stride, name)


@register_encoder(
    "resnet34",
    strides=(2, 4, 8, 16, 32),
    tiny_config=_TINY,
    output_strides=(8, 16, 32),
    pretrained=False,
    description="ResNet-34 (torchvision layout, basic blocks [3, 4, 6, 3]), 21.3M params.",
)
def resnet34(
    inputs=None,
    *,
    input_shape: Sequence[int | None] = (None, None, 3),
    base_width: int = 64,
    output_stride: int = 32,
    name: str = "encoder",
):
    """ResNet-34 encoder; arguments as `resnet18`."""
    return _resnet((3, 4, 6, 3), inputs, input_shape, base_width, output_stride, name)
