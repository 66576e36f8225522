"""Where segmentation_models_pytorch's decoder and head weights live in the zoo's models.

`RULES[arch]` maps smp module paths (state-dict keys without the parameter name) to zoo layer
names by regular expressions; the first full match wins. A `:depthwise` / `:pointwise` tag
marks the two halves of smp's ``SeparableConv2d``, which are one Keras `SeparableConv2D`.
`to_keras` converts a tensor to the Keras layout. The encoder is not covered here.
"""

from __future__ import annotations

import re

import numpy as np

_BN = [(r"(.*)\.1", r"\1_bn")]  # Conv2dReLU-style Sequential: .0 conv, .1 norm

RULES: dict[str, list[tuple[str, str]]] = {
    "UnetPlusPlus": [
        (r"decoder\.blocks\.x_(\d+)_(\d+)\.conv(\d)\.0", r"decoder_x_\1_\2_conv\3_conv"),
        (r"decoder\.blocks\.x_(\d+)_(\d+)\.conv(\d)\.1", r"decoder_x_\1_\2_conv\3_bn"),
    ],
    "Linknet": [
        (r"decoder\.blocks\.(\d+)\.block\.(\d)\.0", r"decoder_blocks_\1_\2_conv"),
        (r"decoder\.blocks\.(\d+)\.block\.(\d)\.1", r"decoder_blocks_\1_\2_bn"),
    ],
    "PSPNet": [
        (r"decoder\.psp\.blocks\.(\d)\.pool\.1\.0", r"decoder_psp_blocks_\1_conv"),
        (r"decoder\.psp\.blocks\.(\d)\.pool\.1\.1", r"decoder_psp_blocks_\1_bn"),
        (r"decoder\.conv\.0", "decoder_conv_conv"),
        (r"decoder\.conv\.1", "decoder_conv_bn"),
    ],
    "PAN": [
        (r"decoder\.fpa\.(branch1|mid|down1|down2)\.\d\.(conv|bn)", r"decoder_fpa_\1_\2"),
        (r"decoder\.fpa\.down3\.(\d)\.(conv|bn)", r"decoder_fpa_down3_\1_\2"),
        (r"decoder\.fpa\.(conv1|conv2)\.(conv|bn)", r"decoder_fpa_\1_\2"),
        (r"decoder\.(gau\d)\.conv1\.1\.(conv|bn)", r"decoder_\1_conv1_\2"),
        (r"decoder\.(gau\d)\.conv2\.(conv|bn)", r"decoder_\1_conv2_\2"),
    ],
    "MAnet": [
        (r"decoder\.center\.(\w+_conv)", r"decoder_center_\1"),
        (r"decoder\.blocks\.(\d)\.hl_conv\.(\d)\.0", r"decoder_blocks_\1_hl_conv_\2_conv"),
        (r"decoder\.blocks\.(\d)\.hl_conv\.(\d)\.1", r"decoder_blocks_\1_hl_conv_\2_bn"),
        (r"decoder\.blocks\.(\d)\.SE_(ll|hl)\.1", r"decoder_blocks_\1_se_\2_conv1"),
        (r"decoder\.blocks\.(\d)\.SE_(ll|hl)\.3", r"decoder_blocks_\1_se_\2_conv2"),
        (r"decoder\.blocks\.(\d)\.conv(\d)\.0", r"decoder_blocks_\1_conv\2_conv"),
        (r"decoder\.blocks\.(\d)\.conv(\d)\.1", r"decoder_blocks_\1_conv\2_bn"),
    ],
    "DeepLabV3": [
        (r"decoder\.aspp\.convs\.4\.1", "decoder_aspp_convs_4_conv"),
        (r"decoder\.aspp\.convs\.4\.2", "decoder_aspp_convs_4_bn"),
        (r"decoder\.aspp\.convs\.(\d)\.0", r"decoder_aspp_convs_\1_conv"),
        (r"decoder\.aspp\.convs\.(\d)\.1", r"decoder_aspp_convs_\1_bn"),
        (r"decoder\.aspp\.project\.0", "decoder_aspp_project_conv"),
        (r"decoder\.aspp\.project\.1", "decoder_aspp_project_bn"),
        (r"decoder\.(conv|bn)", r"decoder_\1"),
    ],
    "DeepLabV3Plus": [
        (r"decoder\.aspp\.0\.convs\.4\.1", "decoder_aspp_convs_4_conv"),
        (r"decoder\.aspp\.0\.convs\.4\.2", "decoder_aspp_convs_4_bn"),
        (r"decoder\.aspp\.0\.convs\.(\d)\.0\.0", r"decoder_aspp_convs_\1_conv:depthwise"),
        (r"decoder\.aspp\.0\.convs\.(\d)\.0\.1", r"decoder_aspp_convs_\1_conv:pointwise"),
        (r"decoder\.aspp\.0\.convs\.(\d)\.0", r"decoder_aspp_convs_\1_conv"),
        (r"decoder\.aspp\.0\.convs\.(\d)\.1", r"decoder_aspp_convs_\1_bn"),
        (r"decoder\.aspp\.0\.project\.0", "decoder_aspp_project_conv"),
        (r"decoder\.aspp\.0\.project\.1", "decoder_aspp_project_bn"),
        (r"decoder\.aspp\.1\.0", "decoder_aspp_sepconv_conv:depthwise"),
        (r"decoder\.aspp\.1\.1", "decoder_aspp_sepconv_conv:pointwise"),
        (r"decoder\.aspp\.2", "decoder_aspp_sepconv_bn"),
        (r"decoder\.block1\.0", "decoder_block1_conv"),
        (r"decoder\.block1\.1", "decoder_block1_bn"),
        (r"decoder\.block2\.0\.0", "decoder_block2_conv:depthwise"),
        (r"decoder\.block2\.0\.1", "decoder_block2_conv:pointwise"),
        (r"decoder\.block2\.1", "decoder_block2_bn"),
    ],
    "UPerNet": [
        (r"decoder\.feature_norms\.(\d)", r"decoder_feature_norms_\1"),
        (r"decoder\.psp\.blocks\.(\d)\.1\.0", r"decoder_psp_blocks_\1_conv"),
        (r"decoder\.psp\.blocks\.(\d)\.1\.1", r"decoder_psp_blocks_\1_bn"),
        (r"decoder\.psp\.out_conv\.0", "decoder_psp_out_conv_conv"),
        (r"decoder\.psp\.out_conv\.1", "decoder_psp_out_conv_bn"),
        (
            r"decoder\.fpn_lateral_blocks\.(\d)\.conv_norm_relu\.0",
            r"decoder_fpn_lateral_blocks_\1_conv",
        ),
        (
            r"decoder\.fpn_lateral_blocks\.(\d)\.conv_norm_relu\.1",
            r"decoder_fpn_lateral_blocks_\1_bn",
        ),
        (r"decoder\.fpn_conv_blocks\.(\d)\.0", r"decoder_fpn_conv_blocks_\1_conv"),
        (r"decoder\.fpn_conv_blocks\.(\d)\.1", r"decoder_fpn_conv_blocks_\1_bn"),
        (r"decoder\.fusion_block\.0", "decoder_fusion_block_conv"),
        (r"decoder\.fusion_block\.1", "decoder_fusion_block_bn"),
    ],
}
HEAD = [(r"segmentation_head\.0", "head_conv")]

# PyTorch parameter / buffer name -> Keras weight name.
PARAMS = {
    "weight": "kernel",
    "bias": "bias",
    "running_mean": "moving_mean",
    "running_var": "moving_variance",
}
NORM_PARAMS = {"weight": "gamma", "bias": "beta"}


def keras_name(arch: str, key: str) -> tuple[str, str]:
    """(zoo layer name, Keras weight name) of smp state-dict `key`."""
    module, param = key.rsplit(".", 1)
    for pattern, replacement in RULES[arch] + HEAD:
        if re.fullmatch(pattern, module):
            layer = re.sub(pattern, replacement, module)
            layer, _, half = layer.partition(":")
            if half:
                return layer, f"{half}_kernel"
            if layer.endswith("_bn") or "feature_norms" in layer or module.endswith(".bn"):
                return layer, NORM_PARAMS.get(param, PARAMS[param])
            return layer, PARAMS[param]
    raise KeyError(f"no zoo layer for smp {arch} weight {key!r}")


def to_keras(array: np.ndarray, weight: str) -> np.ndarray:
    """PyTorch layout -> Keras layout: conv (out, in, kh, kw) and transposed conv (in, out,
    kh, kw) kernels both become (kh, kw, in|out, out|in) by the same transpose; depthwise
    (C, 1, kh, kw) becomes (kh, kw, C, 1)."""
    if weight == "depthwise_kernel":
        return array.transpose(2, 3, 0, 1)
    if array.ndim == 4:
        return array.transpose(2, 3, 1, 0)
    return array
