"""Native Inception-ResNet-v2 encoder in the layout of Cadene's pretrainedmodels, as smp's
``inceptionresnetv2``.

A stem of five BasicConv2d and two max-pools, Mixed-5b, ten Block35 (residuals scaled by
0.17), Mixed-6a, twenty Block17 (0.10), Mixed-7a, nine Block8 (0.20), a last Block8 without
ReLU and a 1x1 BasicConv2d to 1536 channels, with smp's padding
(`zoo.encoders._inception_blocks`). Each residual block adds its branches' 1x1 conv (with
bias), scaled, to its input. Feature maps are smp's: after ``conv2d_2b``, ``conv2d_4a``,
``repeat``, ``repeat_1`` and ``conv2d_7b`` (64, 192, 320, 1088, 1536 channels at strides
2-32); no dilated mode (output stride 32 only, as in smp). Keys: ``conv2d_1a.conv``,
``repeat.{i}.branch1.0.conv``, ``block8.conv2d`` ...

Reference:
    Szegedy et al., "Inception-v4, Inception-ResNet and the Impact of Residual Connections
    on Learning", AAAI 2017.
"""

from __future__ import annotations

import keras

from zoo.encoders._inception_blocks import InceptionGraph, builder, layer_name, register_weights
from zoo.registry import register_encoder


def _residual(g: InceptionGraph, x, branches: list, scale: float, p: str, relu: bool = True):
    """Block35 / Block17 / Block8: ``relu(x + scale * conv1x1(concat(branches)))``."""
    y = g.concat(branches, p)
    y = keras.layers.Conv2D(int(x.shape[-1]), 1, name=layer_name(g.name, f"{p}.conv2d"))(y)
    y = keras.layers.Rescaling(scale, name=layer_name(g.name, f"{p}.scale"))(y)
    y = keras.layers.Add(name=layer_name(g.name, f"{p}.add"))([y, x])
    return keras.layers.ReLU(name=layer_name(g.name, f"{p}.relu"))(y) if relu else y


def _block35(g: InceptionGraph, x, p: str):
    branches = [
        g.conv(x, 32, 1, f"{p}.branch0"),
        g.chain(x, f"{p}.branch1", (32, 1), (32, 3)),
        g.chain(x, f"{p}.branch2", (32, 1), (48, 3), (64, 3)),
    ]
    return _residual(g, x, branches, 0.17, p)


def _block17(g: InceptionGraph, x, p: str):
    branches = [
        g.conv(x, 192, 1, f"{p}.branch0"),
        g.chain(x, f"{p}.branch1", (128, 1), (160, (1, 7)), (192, (7, 1))),
    ]
    return _residual(g, x, branches, 0.10, p)


def _block8(g: InceptionGraph, x, p: str, scale: float = 0.20, relu: bool = True):
    branches = [
        g.conv(x, 192, 1, f"{p}.branch0"),
        g.chain(x, f"{p}.branch1", (192, 1), (224, (1, 3)), (256, (3, 1))),
    ]
    return _residual(g, x, branches, scale, p, relu)


def inceptionresnetv2_features(x, g: InceptionGraph) -> dict:
    """Inception-ResNet-v2 feature maps keyed by stride 2 ... 32 (smp's tensors)."""
    x = g.conv(x, 32, 3, "conv2d_1a", stride=2)
    x = g.conv(x, 32, 3, "conv2d_2a")
    features = {2: g.conv(x, 64, 3, "conv2d_2b")}
    x = g.max_pool(features[2], "maxpool_3a")
    x = g.conv(x, 80, 1, "conv2d_3b")
    features[4] = g.conv(x, 192, 3, "conv2d_4a")
    x = g.max_pool(features[4], "maxpool_5a")
    x = g.concat(
        [
            g.conv(x, 96, 1, "mixed_5b.branch0"),
            g.chain(x, "mixed_5b.branch1", (48, 1), (64, 5)),
            g.chain(x, "mixed_5b.branch2", (64, 1), (96, 3), (96, 3)),
            g.avg_pool_conv(x, 64, "mixed_5b.branch3"),
        ],
        "mixed_5b",
    )
    for i in range(10):
        x = _block35(g, x, f"repeat.{i}")
    features[8] = x
    x = g.concat(
        [
            g.conv(x, 384, 3, "mixed_6a.branch0", stride=2),
            g.chain(x, "mixed_6a.branch1", (256, 1), (256, 3), (384, 3, 2)),
            g.max_pool(x, "mixed_6a.branch2"),
        ],
        "mixed_6a",
    )
    for i in range(20):
        x = _block17(g, x, f"repeat_1.{i}")
    features[16] = x
    x = g.concat(
        [
            g.chain(x, "mixed_7a.branch0", (256, 1), (384, 3, 2)),
            g.chain(x, "mixed_7a.branch1", (256, 1), (288, 3, 2)),
            g.chain(x, "mixed_7a.branch2", (256, 1), (288, 3), (320, 3, 2)),
            g.max_pool(x, "mixed_7a.branch3"),
        ],
        "mixed_7a",
    )
    for i in range(9):
        x = _block8(g, x, f"repeat_2.{i}")
    x = _block8(g, x, "block8", scale=1.0, relu=False)
    features[32] = g.conv(x, 1536, 1, "conv2d_7b")
    return features


register_encoder(
    "inceptionresnetv2",
    strides=(2, 4, 8, 16, 32),
    tiny_config={"width_scale": 0.0625},
    output_strides=(32,),
    pretrained=True,
    description=(
        "Inception-ResNet-v2 (pretrainedmodels layout with smp's padding), 54.3M params; "
        "smp's weights imagenet, imagenet+background."
    ),
)(builder("inceptionresnetv2", "Inception-ResNet-v2", inceptionresnetv2_features))
register_weights(
    "inceptionresnetv2",
    "conv2d_1a.conv",
    {
        "imagenet": "120c5afdbb80a1c989db0a7423ebb7a9db9b1e6c",
        "imagenet+background": "3ecf3491658dc0f6a76d69c9d1cb36511b1ee56c",
    },
    "TensorFlow's Inception-ResNet-v2",
)
