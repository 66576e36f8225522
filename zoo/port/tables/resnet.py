"""ResNets and ResNeXts: torchvision / timm layout -> our native `resnet*` / `resnext*`; SENets:
Cadene's pretrainedmodels layout -> our `se_resnet*` / `se_resnext*`.

torchvision's ``resnet18``/``resnet34`` state dicts and timm's ``resnet18.tv_in1k`` /
``resnet34.tv_in1k`` (the same weights) have identical keys: ``conv1``, ``bn1``,
``layer{1-4}.{block}.conv{1,2}`` / ``bn{1,2}``, ``layer{2-4}.0.downsample.{0,1}``, and the
classifier ``fc`` (ignored). segmentation_models_pytorch stores the same encoder under
``encoder.`` (``get_table("resnet").bind(ours="encoder_", theirs="encoder.")``).

Rules are relative to our encoder's name prefix (``encoder_`` in every model).
"""

from zoo.port.mapping import Rule, Table, register_table

RESNET = register_table(
    "resnet",
    Table(
        "resnet (torchvision layout)",
        (
            Rule(r"stem_conv", "conv1"),
            # One input channel: the normalization folded into the first conv leaves a fixed
            # offset kernel; zoo.pretrained computes it from conv1.weight under this key.
            Rule(r"stem_conv_offset", "conv1.folded_offset", kind="conv"),
            Rule(r"stem_bn", "bn1"),
            Rule(r"stage(\d)_block(\d+)_conv(\d)_conv", "layer{1}.{2-1}.conv{3}"),
            Rule(r"stage(\d)_block(\d+)_conv(\d)_bn", "layer{1}.{2-1}.bn{3}"),
            Rule(r"stage(\d)_block(\d+)_downsample_conv", "layer{1}.{2-1}.downsample.0"),
            Rule(r"stage(\d)_block(\d+)_downsample_bn", "layer{1}.{2-1}.downsample.1"),
        ),
        ignore=(r"fc\..*",),
    ),
)

# SENets (Cadene's pretrainedmodels layout, smp's se_resnet* / se_resnext*): the stem sits
# under ``layer0.``, and each block adds a squeeze-and-excitation module of two 1x1 convs.
SENET = register_table(
    "senet",
    Table(
        "senet (pretrainedmodels layout)",
        (
            Rule(r"stem_conv", "layer0.conv1"),
            Rule(r"stem_conv_offset", "layer0.conv1.folded_offset", kind="conv"),
            Rule(r"stem_bn", "layer0.bn1"),
            # SENet-154's stem: three 3x3 convs.
            Rule(r"stem1_conv_offset", "layer0.conv1.folded_offset", kind="conv"),
            Rule(r"stem(\d)_conv", "layer0.conv{1}"),
            Rule(r"stem(\d)_bn", "layer0.bn{1}"),
            Rule(r"stage(\d)_block(\d+)_conv(\d)_conv", "layer{1}.{2-1}.conv{3}"),
            Rule(r"stage(\d)_block(\d+)_conv(\d)_bn", "layer{1}.{2-1}.bn{3}"),
            Rule(r"stage(\d)_block(\d+)_se_fc(\d)", "layer{1}.{2-1}.se_module.fc{3}"),
            Rule(r"stage(\d)_block(\d+)_downsample_conv", "layer{1}.{2-1}.downsample.0"),
            Rule(r"stage(\d)_block(\d+)_downsample_bn", "layer{1}.{2-1}.downsample.1"),
        ),
        ignore=(r"last_linear\..*",),
    ),
)
