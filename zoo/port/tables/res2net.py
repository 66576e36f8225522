"""Res2Net / Res2NeXt: timm's layout (``conv1``, ``bn1``, ``layer{s}.{b}.conv1`` / ``bn1``,
``convs.{i}`` / ``bns.{i}``, ``conv3`` / ``bn3``, ``downsample.{0,1}``) -> our native
`res2net*` / `res2next50` encoders; the ``d`` variants (``res2net_d``) have timm's deep stem
(``conv1.{0,1,3,4,6}``, then ``bn1``) and average-pool shortcuts (``downsample.{1,2}``).

smp's ``tu-res2net*`` files hold the same modules under ``encoder.model.`` (older
``timm-res2net*`` ones under ``encoder.``); `zoo.encoders._timm.smp_to_timm_key` drops the
``model.``. The classifier (``fc``) is not built.
"""

from zoo.port.mapping import Rule, Table, register_table

_BLOCK = r"layer(\d)_(\d+)_"
_STAGES = (
    Rule(_BLOCK + r"conv(1|3)_conv", "layer{1}.{2}.conv{3}"),
    Rule(_BLOCK + r"conv(1|3)_bn", "layer{1}.{2}.bn{3}"),
    Rule(_BLOCK + r"convs(\d+)_conv", "layer{1}.{2}.convs.{3}"),
    Rule(_BLOCK + r"convs(\d+)_bn", "layer{1}.{2}.bns.{3}"),
)

register_table(
    "res2net",
    Table(
        "res2net (timm layout)",
        (
            Rule(r"stem_conv", "conv1"),
            Rule(r"stem_bn", "bn1"),
            *_STAGES,
            Rule(_BLOCK + r"downsample_conv", "layer{1}.{2}.downsample.0"),
            Rule(_BLOCK + r"downsample_bn", "layer{1}.{2}.downsample.1"),
        ),
        ignore=(r"fc\..*",),
    ),
)
register_table(
    "res2net_d",
    Table(
        "res2net_d (timm layout, deep stem)",
        (
            Rule(r"stem1_conv", "conv1.0"),
            Rule(r"stem1_bn", "conv1.1"),
            Rule(r"stem2_conv", "conv1.3"),
            Rule(r"stem2_bn", "conv1.4"),
            Rule(r"stem3_conv", "conv1.6"),
            Rule(r"stem3_bn", "bn1"),
            *_STAGES,
            Rule(_BLOCK + r"downsample_conv", "layer{1}.{2}.downsample.1"),
            Rule(_BLOCK + r"downsample_bn", "layer{1}.{2}.downsample.2"),
        ),
        ignore=(r"fc\..*",),
    ),
)
