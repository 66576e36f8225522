"""Shared building blocks: normalization/conv helpers and small serializable layers.

Every batch normalization in the native encoders and decoders is created by `batch_norm`, so
the whole zoo shares one setting (synchronized across replicas, PyTorch momentum/epsilon).
"""

from zoo.layers.blocks import (
    batch_norm,
    conv_bn_act,
    separable_conv_bn_act,
    upsample_conv_bn_act,
)
from zoo.layers.spatial import (
    BilinearUpsample2D,
    BroadcastSpatial,
    ChannelAffine,
    CheckDivisible,
    CropToReference,
    PadToMultiple,
)
from zoo.layers.upsample_concat_conv2d import UpsampleConcatConv2D

__all__ = [
    "BilinearUpsample2D",
    "BroadcastSpatial",
    "ChannelAffine",
    "CheckDivisible",
    "CropToReference",
    "PadToMultiple",
    "UpsampleConcatConv2D",
    "batch_norm",
    "conv_bn_act",
    "separable_conv_bn_act",
    "upsample_conv_bn_act",
]
