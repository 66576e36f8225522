"""DenseNet: torchvision layout (``features.*``, smp's ``densenet*``) -> our native `densenet*`.

One table for every depth: the dense layers are numbered as torchvision numbers them
(``denseblock{b}.denselayer{l}``, both from 1). torchvision's files from before 0.3 (``norm.1``
for ``norm1``) are renamed when they are read (`zoo.encoders.densenet`).
"""

from zoo.port.mapping import Rule, Table, register_table

DENSENET = register_table(
    "densenet",
    Table(
        "densenet (torchvision layout)",
        (
            Rule(r"stem_conv", "features.conv0"),
            Rule(r"stem_bn", "features.norm0"),
            Rule(r"block(\d)_layer(\d+)_bn([12])", "features.denseblock{1}.denselayer{2}.norm{3}"),
            Rule(
                r"block(\d)_layer(\d+)_conv([12])", "features.denseblock{1}.denselayer{2}.conv{3}"
            ),
            Rule(r"transition(\d)_bn", "features.transition{1}.norm"),
            Rule(r"transition(\d)_conv", "features.transition{1}.conv"),
            Rule(r"final_bn", "features.norm5"),
        ),
        ignore=(r"classifier\..*",),
    ),
)
