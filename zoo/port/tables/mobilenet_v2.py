"""MobileNetV2: torchvision layout (smp's ``mobilenet_v2``) -> our native `mobilenet_v2`."""

from zoo.port.mapping import Rule, Table, register_table

# torchvision's MobileNetV2 ``features`` (smp's mobilenet_v2): block i is ``features.{i}``;
# block 1 (expansion 1) has no expansion conv, so its depthwise and projection sit one
# module earlier than in the other blocks.
MOBILENET_V2 = register_table(
    "mobilenet_v2",
    Table(
        "mobilenet_v2 (torchvision layout)",
        (
            Rule(r"stem_conv", "features.0.0"),
            Rule(r"stem_bn", "features.0.1"),
            Rule(r"block1_dw_conv", "features.1.conv.0.0"),
            Rule(r"block1_dw_bn", "features.1.conv.0.1"),
            Rule(r"block1_project_conv", "features.1.conv.1"),
            Rule(r"block1_project_bn", "features.1.conv.2"),
            Rule(r"block(\d+)_expand_conv", "features.{1}.conv.0.0"),
            Rule(r"block(\d+)_expand_bn", "features.{1}.conv.0.1"),
            Rule(r"block(\d+)_dw_conv", "features.{1}.conv.1.0"),
            Rule(r"block(\d+)_dw_bn", "features.{1}.conv.1.1"),
            Rule(r"block(\d+)_project_conv", "features.{1}.conv.2"),
            Rule(r"block(\d+)_project_bn", "features.{1}.conv.3"),
            Rule(r"head_conv", "features.18.0"),
            Rule(r"head_bn", "features.18.1"),
        ),
        ignore=(r"classifier\..*",),
    ),
)
