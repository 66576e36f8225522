"""Inception-v4 and Inception-ResNet-v2: pretrainedmodels layout (smp's ``inceptionv4``,
``inceptionresnetv2``) -> our native encoders, whose layer names spell the module path
(``features__4__branch1__3__conv`` is ``features.4.branch1.3.conv``)."""

from zoo.port.mapping import Rule, Table, register_table

INCEPTION = register_table(
    "inception",
    Table(
        "inception (pretrainedmodels layout)",
        (Rule(r"(.+)", lambda m: m.group(1).replace("__", ".")),),
        ignore=(r"last_linear\..*",),
    ),
)
