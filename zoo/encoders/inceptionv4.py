"""Native Inception-v4 encoder in the layout of Cadene's pretrainedmodels, as smp's
``inceptionv4``.

pretrainedmodels' ``features``: a stem of three BasicConv2d and the Mixed-3a/4a/5a
branches, four Inception-A blocks, Reduction-A, seven Inception-B blocks, Reduction-B and
three Inception-C blocks, with smp's padding (`zoo.encoders._inception_blocks`). Feature
maps are smp's ``features[2, 4, 8, 14, 21]`` (64, 192, 384, 1024, 1536 channels at strides
2-32); no dilated mode (output stride 32 only, as in smp). Keys: ``features.{i}...``.

Reference:
    Szegedy et al., "Inception-v4, Inception-ResNet and the Impact of Residual Connections
    on Learning", AAAI 2017.
"""

from __future__ import annotations

from zoo.encoders._inception_blocks import InceptionGraph, builder, register_weights
from zoo.registry import register_encoder

# pretrainedmodels' module index of each block smp returns -> its stride.
OUT_INDEXES = {2: 2, 4: 4, 8: 8, 14: 16, 21: 32}


def _inception_a(g: InceptionGraph, x, p: str):
    return g.concat(
        [
            g.conv(x, 96, 1, f"{p}.branch0"),
            g.chain(x, f"{p}.branch1", (64, 1), (96, 3)),
            g.chain(x, f"{p}.branch2", (64, 1), (96, 3), (96, 3)),
            g.avg_pool_conv(x, 96, f"{p}.branch3"),
        ],
        p,
    )


def _inception_b(g: InceptionGraph, x, p: str):
    return g.concat(
        [
            g.conv(x, 384, 1, f"{p}.branch0"),
            g.chain(x, f"{p}.branch1", (192, 1), (224, (1, 7)), (256, (7, 1))),
            g.chain(
                x,
                f"{p}.branch2",
                (192, 1),
                (192, (7, 1)),
                (224, (1, 7)),
                (224, (7, 1)),
                (256, (1, 7)),
            ),  # fmt: skip
            g.avg_pool_conv(x, 128, f"{p}.branch3"),
        ],
        p,
    )


def _inception_c(g: InceptionGraph, x, p: str):
    b1 = g.conv(x, 384, 1, f"{p}.branch1_0")
    b2 = g.conv(x, 384, 1, f"{p}.branch2_0")
    b2 = g.conv(b2, 448, (3, 1), f"{p}.branch2_1")
    b2 = g.conv(b2, 512, (1, 3), f"{p}.branch2_2")
    return g.concat(
        [
            g.conv(x, 256, 1, f"{p}.branch0"),
            g.conv(b1, 256, (1, 3), f"{p}.branch1_1a"),
            g.conv(b1, 256, (3, 1), f"{p}.branch1_1b"),
            g.conv(b2, 256, (1, 3), f"{p}.branch2_3a"),
            g.conv(b2, 256, (3, 1), f"{p}.branch2_3b"),
            g.avg_pool_conv(x, 256, f"{p}.branch3"),
        ],
        p,
    )


def inceptionv4_features(x, g: InceptionGraph) -> dict:
    """Inception-v4 feature maps keyed by stride 2 ... 32 (smp's choice of tensors)."""
    blocks = [
        lambda x, p: g.conv(x, 32, 3, p, stride=2),
        lambda x, p: g.conv(x, 32, 3, p),
        lambda x, p: g.conv(x, 64, 3, p),
        lambda x, p: g.concat([g.max_pool(x, f"{p}.maxpool"), g.conv(x, 96, 3, f"{p}.conv", 2)], p),
        lambda x, p: g.concat(
            [
                g.chain(x, f"{p}.branch0", (64, 1), (96, 3)),
                g.chain(x, f"{p}.branch1", (64, 1), (64, (1, 7)), (64, (7, 1)), (96, 3)),
            ],
            p,
        ),
        lambda x, p: g.concat(
            [g.conv(x, 192, 3, f"{p}.conv", 2), g.max_pool(x, f"{p}.maxpool")], p
        ),
        *[lambda x, p: _inception_a(g, x, p)] * 4,
        lambda x, p: g.concat(  # Reduction-A
            [
                g.conv(x, 384, 3, f"{p}.branch0", 2),
                g.chain(x, f"{p}.branch1", (192, 1), (224, 3), (256, 3, 2)),
                g.max_pool(x, f"{p}.branch2"),
            ],
            p,
        ),
        *[lambda x, p: _inception_b(g, x, p)] * 7,
        lambda x, p: g.concat(  # Reduction-B
            [
                g.chain(x, f"{p}.branch0", (192, 1), (192, 3, 2)),
                g.chain(x, f"{p}.branch1", (256, 1), (256, (1, 7)), (320, (7, 1)), (320, 3, 2)),
                g.max_pool(x, f"{p}.branch2"),
            ],
            p,
        ),
        *[lambda x, p: _inception_c(g, x, p)] * 3,
    ]
    features = {}
    for i, block in enumerate(blocks):
        x = block(x, f"features.{i}")
        if i in OUT_INDEXES:
            features[OUT_INDEXES[i]] = x
    return features


register_encoder(
    "inceptionv4",
    strides=(2, 4, 8, 16, 32),
    tiny_config={"width_scale": 0.0625},
    output_strides=(32,),
    pretrained=True,
    description=(
        "Inception-v4 (pretrainedmodels layout with smp's padding), 41.1M params; smp's "
        "weights imagenet, imagenet+background."
    ),
)(builder("inceptionv4", "Inception-v4", inceptionv4_features))
register_weights(
    "inceptionv4",
    "features.0.conv",
    {
        "imagenet": "918fb54f07811d82a4ecde3a51156041d0facba9",
        "imagenet+background": "8c2a48e20d2709ee64f8421c61be309f05bfa536",
    },
    "TensorFlow's Inception-v4",
)
