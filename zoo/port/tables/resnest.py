"""ResNeSt: timm's layout (smp's ``tu-resnest*`` / ``timm-resnest*``) -> our native
`zoo.encoders.resnest` encoders.

timm's ``ResNet`` with a deep stem: ``conv1.{0,3,6}`` (convs), ``conv1.{1,4}`` and ``bn1``
(BNs); blocks ``layer{1-4}.{i}`` with ``conv1`` / ``bn1``, the split attention ``conv2.conv``
/ ``bn0`` / ``fc1`` / ``bn1`` / ``fc2``, ``conv3`` / ``bn3``, and the average-pool shortcut
``downsample.{1,2}`` (``downsample.0`` is its pool, weightless). smp's files hold them under
``encoder.model.`` (older ``timm-resnest*`` files under ``encoder.``);
`zoo.encoders._timm.smp_to_timm_key` drops the ``model.``. The classifier ``fc`` is not
built. Our block numbers count from 1, timm's from 0.
"""

from zoo.port.mapping import Rule, Table, register_table

_BLOCK = r"stage(\d)_block(\d+)_"

register_table(
    "resnest",
    Table(
        "resnest (timm layout)",
        (
            Rule(r"stem1_conv", "conv1.0"),
            Rule(r"stem1_bn", "conv1.1"),
            Rule(r"stem2_conv", "conv1.3"),
            Rule(r"stem2_bn", "conv1.4"),
            Rule(r"stem3_conv", "conv1.6"),
            Rule(r"stem_bn", "bn1"),
            Rule(_BLOCK + r"conv([13])_(conv|bn)", "layer{1}.{2-1}.{4}{3}"),
            Rule(_BLOCK + r"conv2_(conv|bn0|fc1|bn1|fc2)", "layer{1}.{2-1}.conv2.{3}"),
            Rule(_BLOCK + r"downsample_conv", "layer{1}.{2-1}.downsample.1"),
            Rule(_BLOCK + r"downsample_bn", "layer{1}.{2-1}.downsample.2"),
        ),
        ignore=(r"fc\..*",),
    ),
)
