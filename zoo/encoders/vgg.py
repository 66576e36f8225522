"""VGG encoders (torchvision's ``vgg*`` and ``vgg*_bn`` layouts), features from full resolution.

Five stages of 3x3 conv (with bias) -> [BN ->] ReLU, 64/128/256/512/512 channels (times
``base_width / 64``), a 2x2/2 max-pool between stages. Unlike ResNets, the first stage runs at
the input's resolution, so these encoders provide a stride-1 feature map: with U-Net's
``full_resolution_skip=True``, `vgg13_bn` (two convs per stage) is the encoder of the original
U-Net (Ronneberger et al.), which the recipe planner picks for small data with fine structures
(docs/quality.md). Parameter counts equal torchvision's ``features`` (tested); the feature maps
are smp's (each stage before its pool, the last pool at stride 32), so smp's VGG models port.
Pretrained weights: torchvision's ImageNet weights as smp publishes them (``imagenet``), their
normalization inside the graph; random weights build the same graph as before they existed.

Reference:
    Simonyan and Zisserman, "Very Deep Convolutional Networks for Large-Scale Image
    Recognition", ICLR 2015.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from zoo import pretrained
from zoo.checks import check_positive
from zoo.encoders._common import (
    native_encoder,
)
from zoo.layers import conv_bn_act
from zoo.registry import register_encoder

# Convolutions per stage (torchvision's configurations "A", "B", "D", "E").
_CONVS = {"vgg11": (1, 1, 2, 2, 2), "vgg13": (2, 2, 2, 2, 2)}
_CONVS |= {"vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}
STAGES = {f"{k}{bn}": v for k, v in _CONVS.items() for bn in ("_bn", "")}
# smp-hub revisions of smp 0.6's "imagenet" weights (torchvision's).
_REVISIONS = {
    "vgg11": "ad8b90e1051c38fdbf399cf5016886a1be357390",
    "vgg11_bn": "59757f9215032c9f092977092d57d26a9df7fd9c",
    "vgg13": "1b70ff2580f101a8007a48b51e2b5d1e5925dc42",
    "vgg13_bn": "9be454515193af6612261b7614fe90607e27b143",
    "vgg16": "49d74b799006ee252b86e25acd6f1fd8ac9a99c1",
    "vgg16_bn": "2c186d02fb519e93219a99a1c2af6295aef0bf0d",
    "vgg19": "2853d00d7bca364dbb98be4d6afa347e5aeec1f6",
    "vgg19_bn": "f09a924cb0d201ea6f61601df9559141382271d7",
}


def vgg_features(
    x, convs: Sequence[int], base_width: int = 64, name: str = "encoder", bn: bool = True
) -> dict:
    """VGG feature maps keyed by stride: each stage's last ReLU at strides 1, 2, 4, 8, 16
    and the max-pool after the last stage at 32 (`bn`: batch norms after the convs)."""
    features = {}
    for stage, num_convs in enumerate(convs):
        if stage:  # torchvision's MaxPool2d(2, 2): floor mode, as "valid"
            x = keras.layers.MaxPooling2D(2, name=f"{name}_stage{stage + 1}_pool")(x)
        filters = base_width * 2 ** min(stage, 3)
        for i in range(num_convs):
            layer = f"{name}_stage{stage + 1}_conv{i + 1}"
            if bn:
                x = conv_bn_act(x, filters, 3, layer, use_bias=True)
            else:
                x = keras.layers.Conv2D(filters, 3, padding="same", name=f"{layer}_conv")(x)
                x = keras.layers.ReLU(name=f"{layer}_relu")(x)
        features[2**stage] = x
    features[32] = keras.layers.MaxPooling2D(2, name=f"{name}_pool")(x)
    return features


def _vgg(encoder, inputs, input_shape, base_width, input_range, weights, norm, name):
    check_positive("base_width", base_width)
    convs, bn = STAGES[encoder], encoder.endswith("_bn")
    return native_encoder(
        encoder,
        inputs,
        input_shape,
        weights,
        norm,
        input_range,
        name,
        lambda x: vgg_features(x, convs, int(base_width), name, bn),
    )


def _params(encoder: str) -> str:
    # torchvision's features: 3x3 convs with bias, BN scale and offset.
    convs, total, cin = STAGES[encoder], 0, 3
    for stage, n in enumerate(convs):
        cout = 64 * 2 ** min(stage, 3)
        for _ in range(n):
            total += 9 * cin * cout + cout + (2 * cout if encoder.endswith("_bn") else 0)
            cin = cout
    return f"{total / 1e6:.1f}M"


def _register(encoder: str):
    @register_encoder(
        encoder,
        strides=(1, 2, 4, 8, 16, 32),
        tiny_config={"base_width": 8},
        output_strides=(32,),
        pretrained=True,
        description=(
            f"VGG-{encoder[3:5]}{' with batch norm' if encoder.endswith('_bn') else ''} "
            f"(torchvision layout, convs per stage {list(STAGES[encoder])}), "
            f"{_params(encoder)} params; features from stride 1."
        ),
    )
    def builder(
        inputs=None,
        *,
        input_shape: Sequence[int | None] = (None, None, 3),
        base_width: int = 64,
        input_range: Sequence[float] | None = None,
        weights: str | None = None,
        input_normalization: str | None = "weights",
        name: str = "encoder",
    ):
        """VGG encoder. Returns ``{stride: features}`` for a tensor, or a `keras.Model`.

        Args:
            inputs: image tensor in [0, 1], or None to get a standalone model.
            input_shape: shape of the standalone model's input (any number of channels).
            base_width: channels of the first stage (64 = torchvision); stages double it up
                to 8x.
            input_range: None, or ``[low, high]``: intensities are mapped linearly so that
                low -> 0 and high -> 1 before the first convolution, inside the model (for
                data that use a small part of [0, 1], such as 12-bit counts in 16-bit files).
            weights: None (random), "imagenet" (torchvision's ImageNet-1k weights as
                segmentation_models_pytorch publishes them, from the Hugging Face hub) or the
                path of a torchvision / smp state dict (.safetensors, .pth). Pretrained
                weights bring their ImageNet normalization into the graph.
            input_normalization: "weights" or None (the caller normalizes, as with smp).
            name: prefix of every layer name.
        """
        return _vgg(
            encoder, inputs, input_shape, base_width, input_range, weights,
            input_normalization, name,
        )  # fmt: skip

    builder.__name__ = builder.__qualname__ = encoder
    return builder


for _encoder in STAGES:
    globals()[_encoder] = _register(_encoder)
    pretrained.register_encoder_weights(
        _encoder,
        table=_encoder,
        first_conv="features.0",
        normalization=pretrained.IMAGENET,
        sources={
            "imagenet": pretrained.smp_hub_source(
                _encoder,
                "imagenet",
                _REVISIONS[_encoder],
                description=(
                    f"torchvision's ImageNet-1k {_encoder} weights, as "
                    f"segmentation_models_pytorch publishes them (smp-hub/{_encoder}.imagenet)"
                ),
                license="BSD-3-Clause (torchvision)",
            )
        },
    )
