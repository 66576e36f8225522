"""Native DenseNet encoders in torchvision's layout, as smp's ``densenet121`` ... ``densenet201``.

torchvision's ``DenseNet.features``: a 7x7/2 conv-BN-ReLU stem and a 3x3/2 max-pool, then four
dense blocks. Each dense layer is BN-ReLU-1x1 conv (``bn_size x growth_rate`` channels) and
BN-ReLU-3x3 conv (``growth_rate`` channels), whose output is concatenated to its input; a
transition (BN-ReLU-1x1 conv halving the channels, 2x2 average pool) follows each block but
the last, which ends in a batch norm. The feature maps are smp's: the stem's ReLU (stride 2),
each transition's ReLU before its conv (strides 4, 8, 16) and the final batch norm, without
a ReLU (stride 32). Pooling downsamples, so there is no dilated mode (output stride 32 only,
as in smp). Convolutions and the max-pool pad as PyTorch does, so torchvision's and smp's
weights compute what they did. Checkpoint keys: ``features.conv0``, ``features.denseblock{b}.
denselayer{l}.norm1`` ... (the ``densenet`` port table; torchvision's older files, with
``norm.1`` for ``norm1``, load too).

Reference:
    Huang et al., "Densely Connected Convolutional Networks", CVPR 2017.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import keras

from zoo import pretrained
from zoo.checks import check_positive_int
from zoo.encoders._common import (
    native_encoder,
)
from zoo.layers import batch_norm
from zoo.registry import register_encoder

# name -> (dense layers per block, growth rate, stem channels, smp-hub revision of "imagenet").
VARIANTS: dict[str, tuple[tuple[int, ...], int, int, str]] = {
    "densenet121": ((6, 12, 24, 16), 32, 64, "a17c96896a265b61338f66f61d3887b24f61995a"),
    "densenet161": ((6, 12, 36, 24), 48, 96, "9afe0fec51ab2a627141769d97d6f83756d78446"),
    "densenet169": ((6, 12, 32, 32), 32, 64, "8facfba9fc72f7750879dac9ac6ceb3ab990de8d"),
    "densenet201": ((6, 12, 48, 32), 32, 64, "ed5deb355d71659391d46fae5e7587460fbb5f84"),
}
TINY = {"growth_rate": 4, "num_init_features": 8, "bn_size": 2}


def _bn_relu(x, name: str, suffix: str = ""):
    x = batch_norm(f"{name}_bn{suffix}")(x)
    return keras.layers.ReLU(name=f"{name}_relu{suffix}")(x)


def dense_layer(x, growth_rate: int, bn_size: int, name: str):
    """torchvision's ``_DenseLayer`` (no dropout): its new channels appended to `x`."""
    y = _bn_relu(x, name, "1")
    y = keras.layers.Conv2D(bn_size * growth_rate, 1, use_bias=False, name=f"{name}_conv1")(y)
    y = _bn_relu(y, name, "2")
    y = keras.layers.ZeroPadding2D(1, name=f"{name}_pad")(y)
    y = keras.layers.Conv2D(growth_rate, 3, use_bias=False, name=f"{name}_conv2")(y)
    return keras.layers.Concatenate(name=f"{name}_concat")([x, y])


def densenet_features(
    x,
    blocks: Sequence[int],
    growth_rate: int,
    num_init_features: int,
    bn_size: int = 4,
    name: str = "encoder",
) -> dict:
    """DenseNet feature maps keyed by stride 2 ... 32 (smp's choice of tensors)."""
    x = keras.layers.ZeroPadding2D(3, name=f"{name}_stem_pad")(x)
    x = keras.layers.Conv2D(
        num_init_features, 7, strides=2, use_bias=False, name=f"{name}_stem_conv"
    )(x)
    x = _bn_relu(x, f"{name}_stem")
    features = {2: x}
    # After a ReLU every value is >= 0, so zero padding is max-pool's -inf padding.
    x = keras.layers.ZeroPadding2D(1, name=f"{name}_stem_pool_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name=f"{name}_stem_pool")(x)
    stride = 4
    for b, layers in enumerate(blocks, start=1):
        for i in range(1, layers + 1):
            x = dense_layer(x, growth_rate, bn_size, f"{name}_block{b}_layer{i}")
        if b == len(blocks):
            features[stride] = batch_norm(f"{name}_final_bn")(x)
            break
        transition = f"{name}_transition{b}"
        x = features[stride] = _bn_relu(x, transition)
        x = keras.layers.Conv2D(
            int(x.shape[-1]) // 2, 1, use_bias=False, name=f"{transition}_conv"
        )(x)
        # torchvision's AvgPool2d(2, 2): floor mode, as "valid".
        x = keras.layers.AveragePooling2D(2, name=f"{transition}_pool")(x)
        stride *= 2
    return features


_DOC = """DenseNet-{depth} encoder: ``{{stride: features}}`` for a tensor, or a `keras.Model`.

    Args:
        inputs: image tensor in [0, 1], or None to get a standalone model.
        input_shape: shape of the standalone model's input (any number of channels).
        growth_rate: channels each dense layer adds ({growth} = the original).
        num_init_features: channels of the stem conv ({stem} = the original).
        bn_size: a dense layer's bottleneck width, in multiples of `growth_rate` (4 = the
            original).
        weights: None (random), "imagenet" (torchvision's ImageNet-1k weights as
            segmentation_models_pytorch publishes them, from the Hugging Face hub) or the
            path of a torchvision / smp state dict (.safetensors, .pth). Pretrained weights
            bring their ImageNet normalization into the graph (inputs stay in [0, 1]).
        input_normalization: "weights" or None (the caller normalizes, as with smp).
        input_range: None, or ``[low, high]``: intensities mapped linearly so that low -> 0
            and high -> 1, inside the model, before the weights' normalization.
        name: prefix of every layer name.
    """


def _builder(encoder: str) -> Callable:
    blocks, growth, stem, _ = VARIANTS[encoder]

    def build(
        inputs=None,
        *,
        input_shape: Sequence[int | None] = (None, None, 3),
        growth_rate: int = growth,
        num_init_features: int = stem,
        bn_size: int = 4,
        weights: str | None = None,
        input_normalization: str | None = "weights",
        input_range: Sequence[float] | None = None,
        name: str = "encoder",
    ):
        for key, value in (
            ("growth_rate", growth_rate),
            ("num_init_features", num_init_features),
            ("bn_size", bn_size),
        ):
            check_positive_int(key, value)
        return native_encoder(
            encoder, inputs, input_shape, weights, input_normalization, input_range, name,
            lambda x: densenet_features(
                x, blocks, int(growth_rate), int(num_init_features), int(bn_size), name
            ),
        )  # fmt: skip

    build.__name__ = build.__qualname__ = encoder
    build.__doc__ = _DOC.format(depth=encoder[8:], growth=growth, stem=stem)
    return build


def params(encoder: str) -> int:
    """Parameters of torchvision's ``features`` for `encoder` (BN: scale and offset)."""
    blocks, growth, channels, _ = VARIANTS[encoder]
    total = 49 * 3 * channels + 2 * channels
    for b, layers in enumerate(blocks):
        for _ in range(layers):
            total += 2 * channels + channels * 4 * growth  # BN, 1x1
            total += 2 * 4 * growth + 9 * 4 * growth * growth  # BN, 3x3
            channels += growth
        total += 2 * channels  # the transition's BN or the final one
        if b < len(blocks) - 1:
            total += channels * (channels // 2)
            channels //= 2
    return total


# torchvision's files before 0.3 name a dense layer's modules "norm.1" for "norm1".
_LEGACY = re.compile(r"(denselayer\d+\.(?:norm|relu|conv))\.([12])\.")


def _rename_legacy(key: str) -> str:
    return _LEGACY.sub(r"\1\2.", key)


for _name, (_blocks, _growth, _stem, _revision) in VARIANTS.items():
    register_encoder(
        _name,
        strides=(2, 4, 8, 16, 32),
        tiny_config=TINY,
        output_strides=(32,),
        pretrained=True,
        description=(
            f"DenseNet-{_name[8:]} (torchvision layout, dense layers {list(_blocks)}, growth "
            f"rate {_growth}), {params(_name) / 1e6:.1f}M params; smp's weights imagenet."
        ),
    )(_builder(_name))
    pretrained.register_encoder_weights(
        _name,
        table="densenet",
        first_conv="features.conv0",
        normalization=pretrained.IMAGENET,
        rename=_rename_legacy,
        sources={
            "imagenet": pretrained.smp_hub_source(
                _name,
                "imagenet",
                _revision,
                description=(
                    f"torchvision's ImageNet-1k {_name} weights, as segmentation_models_pytorch "
                    f"publishes them (smp-hub/{_name}.imagenet)"
                ),
                license="BSD-3-Clause (torchvision)",
            )
        },
    )
