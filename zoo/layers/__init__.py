"""Shared building blocks: normalization/conv helpers and small serializable layers.

Every batch normalization in the native encoders and decoders is created by `batch_norm`, so
the whole zoo shares one setting (synchronized across replicas, PyTorch momentum/epsilon).
"""

from zoo.layers.all_mlp_fuse import AllMLPFuse
from zoo.layers.bilinear_upsampling import BilinearUpsampling
from zoo.layers.blocks import (
    batch_norm,
    conv_bn_act,
    separable_conv_bn_act,
    upsample_conv_bn_act,
)
from zoo.layers.drop_path import DropPath
from zoo.layers.efficient_self_attention import EfficientSelfAttention
from zoo.layers.mix_ffn import MixFFN
from zoo.layers.overlap_patch_embedding import OverlapPatchEmbedding
from zoo.layers.spatial import (
    BroadcastSpatial,
    ChannelAffine,
    CheckDivisible,
    CropToReference,
    FoldedOffset,
    PadToMultiple,
)
from zoo.layers.upsample_concat_conv2d import UpsampleConcatConv2D

__all__ = [
    "AllMLPFuse",
    "BilinearUpsampling",
    "BroadcastSpatial",
    "ChannelAffine",
    "CheckDivisible",
    "CropToReference",
    "DropPath",
    "EfficientSelfAttention",
    "MixFFN",
    "OverlapPatchEmbedding",
    "FoldedOffset",
    "PadToMultiple",
    "UpsampleConcatConv2D",
    "batch_norm",
    "conv_bn_act",
    "separable_conv_bn_act",
    "upsample_conv_bn_act",
]
