"""VGG encoders with batch norm (torchvision's ``vgg*_bn`` layout), features from full resolution.

Five stages of 3x3 conv (with bias) -> BN -> ReLU, 64/128/256/512/512 channels (times
``base_width / 64``), a 2x2/2 max-pool between stages. Unlike ResNets, the first stage runs at
the input's resolution, so these encoders provide a stride-1 feature map: with U-Net's
``full_resolution_skip=True``, `vgg13_bn` (two convs per stage) is the encoder of the original
U-Net (Ronneberger et al.), which the recipe planner picks for small data with fine structures
(docs/quality.md). Parameter counts equal torchvision's ``features`` (tested).

Reference:
    Simonyan and Zisserman, "Very Deep Convolutional Networks for Large-Scale Image
    Recognition", ICLR 2015.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from zoo.checks import check_positive
from zoo.encoders._common import apply_input_range, check_input_range, run_encoder
from zoo.layers import conv_bn_act
from zoo.registry import register_encoder

# Convolutions per stage (torchvision's configurations "A", "B", "D", "E").
STAGES = {
    "vgg11_bn": (1, 1, 2, 2, 2),
    "vgg13_bn": (2, 2, 2, 2, 2),
    "vgg16_bn": (2, 2, 3, 3, 3),
    "vgg19_bn": (2, 2, 4, 4, 4),
}
_PARAMS = {"vgg11_bn": "9.2M", "vgg13_bn": "9.4M", "vgg16_bn": "14.7M", "vgg19_bn": "20.0M"}


def vgg_features(x, convs: Sequence[int], base_width: int = 64, name: str = "encoder") -> dict:
    """VGG-BN feature maps keyed by stride: each stage's last ReLU at strides 1, 2, 4, 8, 16
    and the max-pool after the last stage at 32."""
    features = {}
    for stage, num_convs in enumerate(convs):
        if stage:  # torchvision's MaxPool2d(2, 2): floor mode, as "valid"
            x = keras.layers.MaxPooling2D(2, name=f"{name}_stage{stage + 1}_pool")(x)
        filters = base_width * 2 ** min(stage, 3)
        for i in range(num_convs):
            x = conv_bn_act(x, filters, 3, f"{name}_stage{stage + 1}_conv{i + 1}", use_bias=True)
        features[2**stage] = x
    features[32] = keras.layers.MaxPooling2D(2, name=f"{name}_pool")(x)
    return features


def _vgg(encoder: str, inputs, input_shape, base_width: int, input_range, name: str):
    check_positive("base_width", base_width)
    bounds = check_input_range(input_range)
    convs = STAGES[encoder]

    def body(x):
        return vgg_features(apply_input_range(x, bounds, name), convs, int(base_width), name)

    return run_encoder(inputs, input_shape, name, body)


def _register(encoder: str):
    @register_encoder(
        encoder,
        strides=(1, 2, 4, 8, 16, 32),
        tiny_config={"base_width": 8},
        output_strides=(32,),
        pretrained=False,
        description=(
            f"VGG-{encoder[3:5]} with batch norm (torchvision layout, convs per stage "
            f"{list(STAGES[encoder])}), {_PARAMS[encoder]} params; features from stride 1."
        ),
    )
    def builder(
        inputs=None,
        *,
        input_shape: Sequence[int | None] = (None, None, 3),
        base_width: int = 64,
        input_range: Sequence[float] | None = None,
        name: str = "encoder",
    ):
        """VGG-BN encoder. Returns ``{stride: features}`` for a tensor, or a `keras.Model`.

        Args:
            inputs: image tensor in [0, 1], or None to get a standalone model.
            input_shape: shape of the standalone model's input (any number of channels).
            base_width: channels of the first stage (64 = torchvision); stages double it up
                to 8x.
            input_range: None, or ``[low, high]``: intensities are mapped linearly so that
                low -> 0 and high -> 1 before the first convolution, inside the model (for
                data that use a small part of [0, 1], such as 12-bit counts in 16-bit files).
            name: prefix of every layer name.
        """
        return _vgg(encoder, inputs, input_shape, base_width, input_range, name)

    builder.__name__ = builder.__qualname__ = encoder
    return builder


for _encoder in STAGES:
    globals()[_encoder] = _register(_encoder)
