"""EfficientNets in timm's layout (smp's ``timm-efficientnet-*``, ``timm-tf_efficientnet_lite*``)
-> our native encoders of the same names.

Our blocks are named ``block{stage}_{i}`` like timm's ``blocks.{stage}.{i}``. Stage 0 holds
depthwise-separable blocks (``conv_dw``, ``bn1``, ``se``, ``conv_pw``, ``bn2``); the others
inverted residuals (``conv_pw``, ``bn1``, ``conv_dw``, ``bn2``, ``se``, ``conv_pwl``,
``bn3``). The head smp keeps but never runs (``conv_head``, ``bn2``) is ignored.
"""

from zoo.port.mapping import Rule, Table, register_table

TIMM_EFFICIENTNET = register_table(
    "timm_efficientnet",
    Table(
        "timm_efficientnet (timm layout)",
        (
            Rule(r"stem_conv", "conv_stem"),
            Rule(r"stem_bn", "bn1"),
            Rule(r"block0_(\d+)_dw_conv", "blocks.0.{1}.conv_dw"),
            Rule(r"block0_(\d+)_dw_bn", "blocks.0.{1}.bn1"),
            Rule(r"block0_(\d+)_project_conv", "blocks.0.{1}.conv_pw"),
            Rule(r"block0_(\d+)_project_bn", "blocks.0.{1}.bn2"),
            Rule(r"block(\d+)_(\d+)_expand_conv", "blocks.{1}.{2}.conv_pw"),
            Rule(r"block(\d+)_(\d+)_expand_bn", "blocks.{1}.{2}.bn1"),
            Rule(r"block(\d+)_(\d+)_dw_conv", "blocks.{1}.{2}.conv_dw"),
            Rule(r"block(\d+)_(\d+)_dw_bn", "blocks.{1}.{2}.bn2"),
            Rule(r"block(\d+)_(\d+)_project_conv", "blocks.{1}.{2}.conv_pwl"),
            Rule(r"block(\d+)_(\d+)_project_bn", "blocks.{1}.{2}.bn3"),
            Rule(r"block(\d+)_(\d+)_se_fc1", "blocks.{1}.{2}.se.conv_reduce"),
            Rule(r"block(\d+)_(\d+)_se_fc2", "blocks.{1}.{2}.se.conv_expand"),
        ),
        ignore=(r"conv_head\..*", r"bn2\..*", r"classifier\..*"),
    ),
)
