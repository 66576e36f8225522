"""segmentation_models_pytorch decoders and heads -> our models' layers.

The encoder part of an smp checkpoint is the encoder's own table bound to ``encoder.``
(`zoo.port.smp` adds it); these tables cover the rest. Our layer names are the models' own
(``decoder_...``, ``head_conv``); their keys are smp 0.6's module paths.
"""

from zoo.port.mapping import Rule, Table, register_table

register_table(
    "smp.unet",
    Table(
        "smp Unet decoder",
        (
            # UpsampleConcatConv2D's kernel is the Conv2d's over [upsampled, skip] channels.
            Rule(r"decoder_block(\d+)_conv(\d)_conv", "decoder.blocks.{1-1}.conv{2}.0"),
            Rule(r"decoder_block(\d+)_conv(\d)_bn", "decoder.blocks.{1-1}.conv{2}.1"),
            Rule(r"decoder_center_conv(\d)_conv", "decoder.center.{1-1}.0"),
            Rule(r"decoder_center_conv(\d)_bn", "decoder.center.{1-1}.1"),
            Rule(r"head_conv", "segmentation_head.0"),
        ),
    ),
)

# FPN: our lateral/level names are strides; smp counts levels p5..p2 and seg_blocks 0..3.
_LATERAL = {32: "decoder.p5", 16: "decoder.p4.skip_conv", 8: "decoder.p3.skip_conv"}
_LATERAL[4] = "decoder.p2.skip_conv"
_SEG_BLOCK = {32: 0, 16: 1, 8: 2, 4: 3}


def _stage(part: int):
    def target(match) -> str:
        block = _SEG_BLOCK[int(match.group(1))]
        return f"decoder.seg_blocks.{block}.block.{int(match.group(2)) - 1}.block.{part}"

    return target


register_table(
    "smp.fpn",
    Table(
        "smp FPN decoder",
        (
            Rule(r"decoder_lateral(\d+)", lambda m: _LATERAL[int(m.group(1))]),
            Rule(r"decoder_p(\d+)_stage(\d)_conv", _stage(0)),
            Rule(r"decoder_p(\d+)_stage(\d)_(?:gn|bn)", _stage(1)),
            Rule(r"head_conv", "segmentation_head.0"),
        ),
    ),
)
