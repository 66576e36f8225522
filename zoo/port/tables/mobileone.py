"""MobileOne: smp's layout (``stage0.rbr_conv.0.conv``, ...) -> our native `mobileone_s*`.

One table for every variant: our block ``stage{s}_block{i}`` is smp's ``stage{s}.{i}`` (the
units' depthwise and pointwise blocks alternate, both numbered from 0 as smp's Sequential).
The stem reads the image with two convolutions (its 3x3 branch and its 1x1 scale branch);
`zoo.pretrained.load_native` adapts the first to other than 3 input channels, the
``mobileone_input_conv`` transform here adapts the scale branch the same way.
"""

import numpy as np

from zoo.port.layouts import TRANSFORMS, conv_kernel
from zoo.port.mapping import Rule, Table, register_table


def _input_conv(x: np.ndarray, ours: tuple[int, ...]) -> np.ndarray:
    """An RGB kernel adapted to our input channels (as `adapt_input_kernel` adapts the first
    conv: summed for one channel, cycled and rescaled for others), then to Keras' layout."""
    from zoo.pretrained import adapt_input_kernel

    if x.ndim == 4 and len(ours) == 4 and x.shape[1] != ours[2]:
        x, _ = adapt_input_kernel(x, int(ours[2]), None, in_axis=1)
    return conv_kernel(x, ours)


TRANSFORMS["mobileone_input_conv"] = _input_conv

MOBILEONE = register_table(
    "mobileone",
    Table(
        "mobileone (smp layout, training-time branches)",
        (
            Rule(r"stem_conv0_(conv|bn)", "stage0.rbr_conv.0.{1}"),
            Rule(
                r"stem_scale_conv",
                "stage0.rbr_scale.conv",
                kind={"kernel": ("weight", "mobileone_input_conv")},
            ),
            Rule(r"stem_scale_bn", "stage0.rbr_scale.bn"),
            Rule(r"stage(\d)_block(\d+)_conv(\d+)_(conv|bn)", "stage{1}.{2}.rbr_conv.{3}.{4}"),
            Rule(r"stage(\d)_block(\d+)_scale_(conv|bn)", "stage{1}.{2}.rbr_scale.{3}"),
            Rule(r"stage(\d)_block(\d+)_skip", "stage{1}.{2}.rbr_skip"),
            Rule(r"stage(\d)_block(\d+)_se_fc1", "stage{1}.{2}.se.reduce"),
            Rule(r"stage(\d)_block(\d+)_se_fc2", "stage{1}.{2}.se.expand"),
        ),
        # Apple's classifier; smp drops it when it loads a file.
        ignore=(r"linear\..*",),
    ),
)
