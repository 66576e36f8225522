"""MobileNetV3 in timm's layout (``mobilenetv3_*``, ``tf_mobilenetv3_*``; smp's
``tu-mobilenetv3_*`` and older ``timm-mobilenetv3_*``) -> our native encoders of the same names.

timm builds MobileNetV3 with its EfficientNet builder, so the keys are timm EfficientNet's
(``conv_stem``, ``bn1``, ``blocks.{stage}.{i}.conv_dw`` ...) plus the final 1x1 block,
``blocks.{last}.0.conv`` / ``bn1``. smp's files hold them under ``encoder.model.``
(`zoo.encoders._timm.smp_to_timm_key` drops the ``model.``). The classifier head
(``conv_head``, ``classifier``) is not built.
"""

from zoo.port.mapping import Rule, Table, register_table
from zoo.port.tables.timm_efficientnet import TIMM_EFFICIENTNET

register_table(
    "mobilenet_v3",
    Table(
        "mobilenet_v3 (timm layout)",
        (
            *TIMM_EFFICIENTNET.rules,
            Rule(r"block(\d+)_(\d+)_conv", "blocks.{1}.{2}.conv"),
            Rule(r"block(\d+)_(\d+)_bn", "blocks.{1}.{2}.bn1"),
        ),
        ignore=(r"conv_head\..*", r"classifier\..*"),
    ),
)
