"""GENet: timm's ByobNet layout (``stem.conv`` / ``stem.bn``, ``stages.{s}.{b}.conv1_kxk``,
``conv2_kxk``, ``conv1_1x1``, ``conv3_1x1``, ``shortcut`` each as ``.conv`` / ``.bn``,
``final_conv``) -> our native `gernet_*` encoders.

smp's ``tu-gernet_*`` files hold the same modules under ``encoder.model.`` (older
``timm-gernet_*`` ones under ``encoder.``); `zoo.encoders._timm.smp_to_timm_key` drops the
``model.``. The classifier head (``head.fc``) is not built.
"""

from zoo.port.mapping import Rule, Table, register_table

register_table(
    "gernet",
    Table(
        "gernet (timm layout)",
        (
            Rule(r"stem_(conv|bn)", "stem.{1}"),
            Rule(r"stages(\d)_(\d+)_(\w+)_(conv|bn)", "stages.{1}.{2}.{3}.{4}"),
            Rule(r"final_conv_(conv|bn)", "final_conv.{1}"),
        ),
        ignore=(r"head\..*",),
    ),
)
