"""EfficientNetV2 in timm's layout (``tf_efficientnetv2_*``, ``efficientnetv2_*``; smp's
``tu-tf_efficientnetv2_*`` / ``tu-efficientnetv2_*``) -> our native encoders of the same names.

timm builds EfficientNetV2 with its EfficientNet builder, so the keys are timm EfficientNet's
(``conv_stem``, ``bn1``, ``blocks.{stage}.{i}.conv_pw`` ... for the inverted residuals) plus
its two other blocks: conv-BN-activation (``blocks.{stage}.{i}.conv`` / ``bn1``) and the fused
inverted residual (``EdgeResidual``: ``conv_exp`` / ``bn1``, ``se.conv_reduce`` /
``se.conv_expand`` where it has SE, ``conv_pwl`` / ``bn2``). smp's files hold them under
``encoder.model.`` (`zoo.encoders._timm.smp_to_timm_key` drops the ``model.``). The head
(``conv_head``, ``bn2``, ``classifier``) is not built.
"""

from zoo.port.mapping import Rule, Table, register_table
from zoo.port.tables.timm_efficientnet import TIMM_EFFICIENTNET

register_table(
    "efficientnet_v2",
    Table(
        "efficientnet_v2 (timm layout)",
        (
            *TIMM_EFFICIENTNET.rules,
            Rule(r"block(\d+)_(\d+)_exp_conv", "blocks.{1}.{2}.conv_exp"),
            Rule(r"block(\d+)_(\d+)_exp_bn", "blocks.{1}.{2}.bn1"),
            Rule(r"block(\d+)_(\d+)_pwl_conv", "blocks.{1}.{2}.conv_pwl"),
            Rule(r"block(\d+)_(\d+)_pwl_bn", "blocks.{1}.{2}.bn2"),
            Rule(r"block(\d+)_(\d+)_conv", "blocks.{1}.{2}.conv"),
            Rule(r"block(\d+)_(\d+)_bn", "blocks.{1}.{2}.bn1"),
        ),
        ignore=TIMM_EFFICIENTNET.ignore,
    ),
)
