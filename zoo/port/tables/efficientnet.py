"""EfficientNet-B0..B7: efficientnet_pytorch layout (smp's ``efficientnet-b*``) -> our native
encoders of the same names.

Keys: ``_conv_stem`` / ``_bn0``, then per block ``_blocks.{i}.`` + ``_expand_conv`` / ``_bn0``
(absent where the expansion is 1), ``_depthwise_conv`` / ``_bn1``, ``_se_reduce`` /
``_se_expand`` (1x1 convs with bias), ``_project_conv`` / ``_bn2``. The classifier head
(``_conv_head``, ``_bn1``, ``_fc``), which smp keeps but never runs, is ignored. Our block
indices are theirs (``block{i}``, 0-based).
"""

from zoo.port.mapping import Rule, Table, register_table

EFFICIENTNET = register_table(
    "efficientnet",
    Table(
        "efficientnet (efficientnet_pytorch layout)",
        (
            Rule(r"stem_conv", "_conv_stem"),
            Rule(r"stem_bn", "_bn0"),
            Rule(r"block(\d+)_expand_conv", "_blocks.{1}._expand_conv"),
            Rule(r"block(\d+)_expand_bn", "_blocks.{1}._bn0"),
            Rule(r"block(\d+)_dw_conv", "_blocks.{1}._depthwise_conv"),
            Rule(r"block(\d+)_dw_bn", "_blocks.{1}._bn1"),
            Rule(r"block(\d+)_se_fc1", "_blocks.{1}._se_reduce"),
            Rule(r"block(\d+)_se_fc2", "_blocks.{1}._se_expand"),
            Rule(r"block(\d+)_project_conv", "_blocks.{1}._project_conv"),
            Rule(r"block(\d+)_project_bn", "_blocks.{1}._bn2"),
        ),
        ignore=(r"_conv_head\..*", r"_bn1\..*", r"_fc\..*"),
    ),
)
