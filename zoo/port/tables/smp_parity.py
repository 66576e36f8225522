"""segmentation_models_pytorch's UnetPlusPlus, Linknet, PSPNet, PAN, MAnet, DeepLabV3,
DeepLabV3Plus and UPerNet -> the zoo's smp-parity models.

Per architecture: the port table of its decoder and head (our layer names -> smp 0.6's module
paths) and its `SmpModel` entry: what the state dict tells of the architecture (decoder
widths, depth, separable ASPP), the smp arguments it does not tell (`options`: output stride,
atrous rates, interpolation) and the encoder stages smp builds but never runs (`unused`). The
encoder is its own table bound to ``encoder.`` (`zoo.port.smp`).

Layer conventions (ours -> theirs): `conv_bn_act`'s ``X_conv`` / ``X_bn`` are smp's
``Conv2dReLU`` ``X.0`` / ``X.1``; a Keras `SeparableConv2D` is smp's ``SeparableConv2d``, a
Sequential of the depthwise (``.0``) and pointwise (``.1``) convolutions.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from zoo.port.mapping import PortError, Rule, Table, register_table
from zoo.port.smp import SmpModel, register_smp_model

# smp's SeparableConv2d (depthwise, then pointwise, no bias) as one Keras SeparableConv2D.
SEPARABLE = {
    "depthwise_kernel": ("0.weight", "depthwise"),
    "pointwise_kernel": ("1.weight", "conv"),
}


def _conv_or_separable(layer: Any) -> Any:
    import keras

    return SEPARABLE if isinstance(layer, keras.layers.SeparableConv2D) else "conv"


def _cbr(ours: str, theirs: str, conv: str = "0", bn: str = "1", kind: Any = None) -> list[Rule]:
    """Rules for a `conv_bn_act` named `ours` whose conv and norm are `theirs`.`conv` / .`bn`."""
    return [
        Rule(ours + "_conv", f"{theirs}.{conv}", kind),
        Rule(ours + "_bn", f"{theirs}.{bn}"),
    ]


HEAD = Rule(r"head_conv", "segmentation_head.0")


def _table(name: str, description: str, *rules: Rule | list[Rule]) -> None:
    flat = [r for rule in rules for r in (rule if isinstance(rule, list) else [rule])]
    register_table(name, Table(description, (*flat, HEAD)))


# === Tables ===

_table(
    "smp.unetplusplus",
    "smp UnetPlusPlus decoder",
    _cbr(r"decoder_x_(\d+)_(\d+)_conv(\d)", "decoder.blocks.x_{1}_{2}.conv{3}"),
)
_table(
    "smp.linknet",
    "smp Linknet decoder",
    # block.1 is the transposed convolution (with its bias) and its batch norm.
    _cbr(r"decoder_blocks_(\d+)_(\d)", "decoder.blocks.{1}.block.{2}"),
)
_table(
    "smp.pspnet",
    "smp PSPNet decoder",
    # The 1x1 grid's branch is a biased conv without a norm: only its `_conv` exists.
    _cbr(r"decoder_psp_blocks_(\d)", "decoder.psp.blocks.{1}.pool.1"),
    _cbr(r"decoder_conv", "decoder.conv"),
)
_table(
    "smp.pan",
    "smp PAN decoder",
    _cbr(r"decoder_fpa_branch1", "decoder.fpa.branch1.1", "conv", "bn"),
    _cbr(r"decoder_fpa_mid", "decoder.fpa.mid.0", "conv", "bn"),
    _cbr(r"decoder_fpa_(down1|down2)", "decoder.fpa.{1}.1", "conv", "bn"),
    _cbr(r"decoder_fpa_down3_(\d)", "decoder.fpa.down3.{1}", "conv", "bn"),
    _cbr(r"decoder_fpa_(conv1|conv2)", "decoder.fpa.{1}", "conv", "bn"),
    _cbr(r"decoder_(gau\d)_conv1", "decoder.{1}.conv1.1", "conv", "bn"),
    _cbr(r"decoder_(gau\d)_conv2", "decoder.{1}.conv2", "conv", "bn"),
)
_table(
    "smp.manet",
    "smp MAnet decoder",
    Rule(r"decoder_center_(top|center|bottom|out)_conv", "decoder.center.{1}_conv"),
    _cbr(r"decoder_blocks_(\d)_hl_conv_(\d)", "decoder.blocks.{1}.hl_conv.{2}"),
    Rule(r"decoder_blocks_(\d)_se_(ll|hl)_conv1", "decoder.blocks.{1}.SE_{2}.1"),
    Rule(r"decoder_blocks_(\d)_se_(ll|hl)_conv2", "decoder.blocks.{1}.SE_{2}.3"),
    # conv1 is the UpsampleConcatConv2D: smp's Conv2d over [upsampled, skip] channels.
    _cbr(r"decoder_blocks_(\d)_conv(\d)", "decoder.blocks.{1}.conv{2}"),
)


def _aspp(prefix: str) -> list[Rule]:
    """`zoo.layers.aspp` named ``decoder_aspp`` -> smp's ASPP module at `prefix`."""
    return [
        # The image-pooling branch (the last of five): Sequential(pool, conv, bn, relu).
        *_cbr(r"decoder_aspp_convs_4", f"{prefix}.convs.4", "1", "2"),
        *_cbr(r"decoder_aspp_convs_(\d)", prefix + ".convs.{1}", kind=_conv_or_separable),
        *_cbr(r"decoder_aspp_project", f"{prefix}.project"),
    ]


_table(
    "smp.deeplabv3",
    "smp DeepLabV3 decoder",
    _aspp("decoder.aspp"),
    Rule(r"decoder_(conv|bn)", "decoder.{1}"),
)
_table(
    "smp.deeplabv3plus",
    "smp DeepLabV3Plus decoder",
    _aspp("decoder.aspp.0"),
    Rule(r"decoder_aspp_sepconv_conv", "decoder.aspp.1", SEPARABLE),
    Rule(r"decoder_aspp_sepconv_bn", "decoder.aspp.2"),
    _cbr(r"decoder_block1", "decoder.block1"),
    _cbr(r"decoder_block2", "decoder.block2", kind=SEPARABLE),
)
_table(
    "smp.upernet",
    "smp UPerNet decoder",
    Rule(r"decoder_feature_norms_(\d)", "decoder.feature_norms.{1}"),
    _cbr(r"decoder_psp_blocks_(\d)", "decoder.psp.blocks.{1}.1"),
    _cbr(r"decoder_psp_out_conv", "decoder.psp.out_conv"),
    _cbr(r"decoder_fpn_lateral_blocks_(\d)", "decoder.fpn_lateral_blocks.{1}.conv_norm_relu"),
    _cbr(r"decoder_fpn_conv_blocks_(\d)", "decoder.fpn_conv_blocks.{1}"),
    _cbr(r"decoder_fusion_block", "decoder.fusion_block"),
)


# === What the weights tell of each architecture ===


def _need(state: dict[str, np.ndarray], key: str, arch: str) -> np.ndarray:
    if key not in state:
        raise PortError(f"missing key {key!r} (not an smp {arch}?)")
    return state[key]


def _widths(state: dict[str, np.ndarray], template: str) -> list[int]:
    """Output channels of ``template.format(i)`` for i = 0, 1, ... while the key exists."""
    widths: list[int] = []
    while template.format(len(widths)) in state:
        widths.append(int(state[template.format(len(widths))].shape[0]))
    return widths


def _unetplusplus(state: dict[str, np.ndarray]) -> dict[str, Any]:
    _need(state, "decoder.blocks.x_0_0.conv1.0.weight", "UnetPlusPlus")
    return {"decoder_channels": _widths(state, "decoder.blocks.x_0_{}.conv1.0.weight")}


def _linknet(state: dict[str, np.ndarray]) -> dict[str, Any]:
    _need(state, "decoder.blocks.0.block.2.0.weight", "Linknet")
    widths = _widths(state, "decoder.blocks.{}.block.2.0.weight")
    return {"encoder_depth": len(widths), "prefinal_channels": widths[-1]}


def _pspnet(state: dict[str, np.ndarray]) -> dict[str, Any]:
    pyramid_in = int(_need(state, "decoder.psp.blocks.0.pool.1.0.weight", "PSPNet").shape[1])
    # encoder_depth: the ResNet stage whose output the pyramid pools (smp keeps all stages).
    depth = next(
        (
            d
            for d in (3, 4, 5)
            if f"encoder.layer{d - 1}.0.conv1.weight" in state
            and state[f"encoder.layer{d - 1}.0.conv1.weight"].shape[0] == pyramid_in
        ),
        3,
    )
    out = int(_need(state, "decoder.conv.0.weight", "PSPNet").shape[0])
    return {"encoder_depth": depth, "psp_out_channels": out}


def _resnet_stages_after(state: dict[str, np.ndarray], kwargs: dict[str, Any]) -> tuple[str, ...]:
    """smp builds every ResNet stage whatever `encoder_depth`; the zoo model has those up to
    it (depth 3: the stem, layer1 and layer2)."""
    return tuple(rf"encoder\.layer{k}\..*" for k in range(int(kwargs["encoder_depth"]), 5))


def _pan(state: dict[str, np.ndarray]) -> dict[str, Any]:
    width = int(_need(state, "decoder.fpa.mid.0.conv.weight", "PAN").shape[0])
    return {
        "decoder_channels": width,
        "decoder_conv_bias": "decoder.fpa.mid.0.conv.bias" in state,
    }


def _manet(state: dict[str, np.ndarray]) -> dict[str, Any]:
    pab = int(_need(state, "decoder.center.top_conv.weight", "MAnet").shape[0])
    return {
        "decoder_channels": _widths(state, "decoder.blocks.{}.conv1.0.weight"),
        "pab_channels": pab,
    }


def _deeplab(prefix: str, arch: str):
    def read(state: dict[str, np.ndarray]) -> dict[str, Any]:
        width = int(_need(state, f"{prefix}.convs.0.0.weight", arch).shape[0])
        return {
            "decoder_channels": width,
            "aspp_separable": f"{prefix}.convs.1.0.0.weight" in state,
        }

    return read


def _upernet(state: dict[str, np.ndarray]) -> dict[str, Any]:
    width = int(_need(state, "decoder.psp.out_conv.0.weight", "UPerNet").shape[0])
    return {
        "decoder_channels": width,
        "feature_norm": "decoder.feature_norms.0.weight" in state,
    }


_DEEPLAB_OPTIONS = {
    "encoder_output_stride": "output_stride",
    "decoder_atrous_rates": "atrous_rates",
}
_ENTRIES = {
    "unetplusplus": SmpModel("UnetPlusPlus", "unetplusplus", "smp.unetplusplus", _unetplusplus),
    "linknet": SmpModel("Linknet", "linknet", "smp.linknet", _linknet, unused=_resnet_stages_after),
    "pspnet": SmpModel("PSPNet", "pspnet", "smp.pspnet", _pspnet, unused=_resnet_stages_after),
    "pan": SmpModel(
        "PAN",
        "pan",
        "smp.pan",
        _pan,
        options={
            "encoder_output_stride": "output_stride",
            "decoder_interpolation": "decoder_interpolation",
        },
    ),
    "manet": SmpModel("MAnet", "manet", "smp.manet", _manet),
    "deeplabv3": SmpModel(
        "DeepLabV3",
        "deeplabv3",
        "smp.deeplabv3",
        _deeplab("decoder.aspp", "DeepLabV3"),
        options=_DEEPLAB_OPTIONS,
    ),
    "deeplabv3plus": SmpModel(
        "DeepLabV3Plus",
        "deeplabv3plus",
        "smp.deeplabv3plus",
        _deeplab("decoder.aspp.0", "DeepLabV3Plus"),
        options=_DEEPLAB_OPTIONS,
    ),
    "upernet": SmpModel("UPerNet", "upernet", "smp.upernet", _upernet),
}
for _name, _entry in _ENTRIES.items():
    register_smp_model(_name, _entry)
