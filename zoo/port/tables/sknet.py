"""Selective-kernel ResNets: timm layout (smp's ``timm-skresnet*`` / ``timm-skresnext50_32x4d``)
-> our native `zoo.encoders.sknet` encoders.

timm's ``ResNet``: the stem ``conv1`` / ``bn1``, blocks ``layer{1-4}.{i}``; a selective kernel
(``conv1`` of a basic block, ``conv2`` of a bottleneck) holds ``paths.{0,1}.conv`` / ``.bn``
and ``attn.fc_reduce`` / ``attn.bn`` / ``attn.fc_select``; the other convs are ``ConvNormAct``
(``conv{n}.conv`` / ``conv{n}.bn``); the projection shortcut ``downsample.{0,1}``; the
classifier ``fc`` is ignored. Our path numbers are timm's (from 0), our block numbers from 1.

Rules are relative to our encoder's name prefix (``encoder_`` in every model).
"""

from zoo.port.mapping import Rule, Table, register_table

_BLOCK = r"stage(\d)_block(\d+)_"

SKNET = register_table(
    "sknet",
    Table(
        "sknet (timm layout)",
        (
            Rule(r"stem_conv", "conv1"),
            Rule(r"stem_bn", "bn1"),
            Rule(_BLOCK + r"conv(\d)_path(\d)_(conv|bn)", "layer{1}.{2-1}.conv{3}.paths.{4}.{5}"),
            Rule(
                _BLOCK + r"conv(\d)_attn_(fc_reduce|bn|fc_select)",
                "layer{1}.{2-1}.conv{3}.attn.{4}",
            ),
            Rule(_BLOCK + r"conv(\d)_(conv|bn)", "layer{1}.{2-1}.conv{3}.{4}"),
            Rule(_BLOCK + r"downsample_conv", "layer{1}.{2-1}.downsample.0"),
            Rule(_BLOCK + r"downsample_bn", "layer{1}.{2-1}.downsample.1"),
        ),
        ignore=(r"fc\..*",),
    ),
)
