"""RegNetX / RegNetY: timm's layout (``stem.conv``, ``s{s}.b{b}.conv{1,2,3}.{conv, bn}``,
``se.fc1`` / ``se.fc2``, ``downsample.{conv, bn}``) -> our native `regnet*` encoders.

smp's ``tu-regnet*`` files hold the same modules under ``encoder.model.`` (older
``timm-regnet*`` files under ``encoder.``); `zoo.encoders._timm.smp_to_timm_key` drops the
``model.``. The classifier head (``head.fc``) is not built.
"""

from zoo.port.mapping import Rule, Table, register_table

_BLOCK = r"s(\d)_b(\d+)_"

register_table(
    "regnet",
    Table(
        "regnet (timm layout)",
        (
            Rule(r"stem_(conv|bn)", "stem.{1}"),
            Rule(_BLOCK + r"conv(\d)_(conv|bn)", "s{1}.b{2}.conv{3}.{4}"),
            Rule(_BLOCK + r"se_(fc\d)", "s{1}.b{2}.se.{3}"),
            Rule(_BLOCK + r"downsample_(conv|bn)", "s{1}.b{2}.downsample.{3}"),
        ),
        ignore=(r"head\..*",),
    ),
)
