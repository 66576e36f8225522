"""The pyramid pooling branches of PSPNet and UPerNet as a functional helper."""

from __future__ import annotations

from collections.abc import Sequence

import keras

from zoo.layers.adaptive_average_pooling import AdaptiveAveragePooling2D
from zoo.layers.bilinear_upsampling import BilinearUpsampling
from zoo.layers.blocks import conv_bn_act
from zoo.layers.spatial import BroadcastSpatial


def pyramid_pooling(
    x,
    sizes: Sequence[int],
    channels: int,
    name: str,
    align_corners: bool,
    global_norm: bool = True,
) -> list:
    """One branch per pooled grid size: adaptive average pooling to ``size x size`` (PyTorch's
    bins), 1x1 conv -> BN -> ReLU, bilinear resize back to `x`'s size (a 1x1 grid is
    broadcast, which equals any interpolation). Returns the branches, in the order of `sizes`,
    for the caller to concatenate.

    Args:
        x: the coarsest feature map ``(B, H, W, C)``.
        sizes: grid sizes, e.g. (1, 2, 3, 6).
        channels: output channels of each branch.
        name: prefix; branch `i` is ``{name}_blocks_{i}_{pool,conv,bn,relu,resize}``.
        align_corners: PyTorch's bilinear ``align_corners`` (smp: True in PSPNet, False in
            UPerNet).
        global_norm: False gives the 1x1 grid a biased conv and no batch norm (smp's PSPNet,
            whose BN would see one value per channel and image).

    Reference:
        Zhao et al., "Pyramid Scene Parsing Network", CVPR 2017.
    """
    branches = []
    for i, size in enumerate(sizes):
        prefix = f"{name}_blocks_{i}"
        y = AdaptiveAveragePooling2D(size, name=f"{prefix}_pool")(x)
        if size == 1 and not global_norm:
            y = keras.layers.Conv2D(channels, 1, name=f"{prefix}_conv")(y)
            y = keras.layers.Activation("relu", name=f"{prefix}_relu")(y)
        else:
            y = conv_bn_act(y, channels, 1, prefix)
        if size == 1:
            y = BroadcastSpatial(name=f"{prefix}_broadcast")([y, x])
        else:
            # float32 (the layer's default): TF 2.21's XLA rejects a bfloat16 bilinear resize.
            resize = BilinearUpsampling(None, align_corners=align_corners, name=f"{prefix}_resize")
            y = resize([y, x])
        branches.append(y)
    return branches
