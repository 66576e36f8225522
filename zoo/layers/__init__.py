"""Shared building blocks: normalization/conv helpers and small serializable layers.

Every batch normalization in the native encoders and decoders is created by `batch_norm`, so
the whole zoo shares one setting (synchronized across replicas, PyTorch momentum/epsilon).
"""

from zoo.layers.adaptive_average_pooling import AdaptiveAveragePooling2D
from zoo.layers.all_mlp_fuse import AllMLPFuse
from zoo.layers.aspp import aspp, sepconv_bn_act
from zoo.layers.bilinear_upsampling import BilinearUpsampling
from zoo.layers.blocks import (
    batch_norm,
    conv_bn_act,
    separable_conv_bn_act,
    squeeze_excite,
    subsample_for_pointwise,
    upsample_conv_bn_act,
)
from zoo.layers.channel_mlp import ChannelMLP
from zoo.layers.channel_split import ChannelSplit
from zoo.layers.class_token import ClassToken
from zoo.layers.dilated_conv2d import DilatedConv2D
from zoo.layers.dilated_separable_conv2d import DilatedSeparableConv2D
from zoo.layers.drop_path import DropPath
from zoo.layers.efficient_self_attention import EfficientSelfAttention
from zoo.layers.gelu import GELU
from zoo.layers.grouped_conv2d import GroupedConv2D
from zoo.layers.halving_max_pooling import HalvingMaxPooling2D
from zoo.layers.layer_scale import LayerScale
from zoo.layers.mix_ffn import MixFFN
from zoo.layers.overlap_patch_embedding import OverlapPatchEmbedding
from zoo.layers.padded_max_pooling import PaddedMaxPooling2D
from zoo.layers.position_attention import PositionAttention
from zoo.layers.position_embedding import PositionEmbedding
from zoo.layers.prefix_token_readout import PrefixTokenReadout
from zoo.layers.pyramid_pooling import pyramid_pooling
from zoo.layers.qkv_attention import QKVAttention
from zoo.layers.selective_kernel_attention import SelectiveKernelAttention
from zoo.layers.spatial import (
    BroadcastSpatial,
    ChannelAffine,
    CheckDivisible,
    CropToReference,
    FoldedOffset,
    PadToMultiple,
)
from zoo.layers.tokens_to_grid import TokensToGrid
from zoo.layers.upsample_concat_conv2d import UpsampleConcatConv2D

__all__ = [
    "AdaptiveAveragePooling2D",
    "AllMLPFuse",
    "BilinearUpsampling",
    "BroadcastSpatial",
    "ChannelAffine",
    "ChannelMLP",
    "ChannelSplit",
    "CheckDivisible",
    "ClassToken",
    "CropToReference",
    "DilatedConv2D",
    "DilatedSeparableConv2D",
    "DropPath",
    "EfficientSelfAttention",
    "FoldedOffset",
    "GELU",
    "GroupedConv2D",
    "HalvingMaxPooling2D",
    "LayerScale",
    "MixFFN",
    "OverlapPatchEmbedding",
    "PadToMultiple",
    "PaddedMaxPooling2D",
    "PositionAttention",
    "PositionEmbedding",
    "PrefixTokenReadout",
    "QKVAttention",
    "SelectiveKernelAttention",
    "TokensToGrid",
    "UpsampleConcatConv2D",
    "aspp",
    "batch_norm",
    "conv_bn_act",
    "pyramid_pooling",
    "separable_conv_bn_act",
    "squeeze_excite",
    "subsample_for_pointwise",
    "sepconv_bn_act",
    "upsample_conv_bn_act",
]
