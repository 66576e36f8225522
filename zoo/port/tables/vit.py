"""Vision Transformers (timm layout) and segmentation_models_pytorch's DPT.

Encoder table ``"vit"`` (relative to the encoder's module and our encoder's name prefix):
timm's ``VisionTransformer`` names (``patch_embed.proj``, ``cls_token``, ``pos_embed``,
``blocks.{b}.norm1`` / ``attn.qkv`` / ``attn.proj`` / ``norm2`` / ``mlp.fc1`` / ``mlp.fc2``),
at the root of a timm checkpoint and under ``encoder.model.`` in an smp DPT. The final
``norm`` and the classifier ``head`` are not built here (DPT reads raw block outputs) and are
skipped.

Decoder table ``"smp.dpt"``: smp 0.6's ``DPTDecoder`` (``decoder.projection_blocks``,
``reassemble_blocks``, ``fusion_blocks``) and ``DPTSegmentationHead``
(``segmentation_head.head.{0, 1, 4}``). Its `SmpModel` reads the read-block count and the
widths from the weights; the readout is ``"cat"`` when the weights have its projections, else
one of ``"add"`` / ``"ignore"`` that the weights cannot tell (``--smp-arg
decoder_readout=...``); ``num_heads`` (the encoder's, which no weight shape tells) defaults to
the named variant's.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from zoo.port.mapping import PortError, Rule, Table, register_table
from zoo.port.smp import SmpModel, register_smp_model
from zoo.registry import ENCODERS

_BLOCK = r"block(\d+)_"

register_table(
    "vit",
    Table(
        "vit (timm layout)",
        (
            Rule(r"patch_embed", "patch_embed.proj"),
            Rule(r"cls_token", "cls_token", kind={"cls_token": ("", "identity")}),
            Rule(r"pos_embed", "pos_embed", kind={"pos_embed": ("", "identity")}),
            Rule(_BLOCK + r"norm(\d)", "blocks.{1}.norm{2}"),
            Rule(_BLOCK + r"attn_(qkv|proj)", "blocks.{1}.attn.{2}"),
            Rule(_BLOCK + r"mlp_(fc\d)", "blocks.{1}.mlp.{2}"),
        ),
        # (pre_logits: the representation layer of the original in21k checkpoints.)
        ignore=(r"norm\..*", r"fc_norm\..*", r"head\..*", r"pre_logits\..*"),
    ),
)

_FUSION = r"decoder_fusion(\d+)_"
register_table(
    "smp.dpt",
    Table(
        "smp DPT decoder and head",
        (
            Rule(r"decoder_readout(\d+)_project", "decoder.projection_blocks.{1}.project.0"),
            Rule(
                r"decoder_reassemble(\d+)_project",
                "decoder.reassemble_blocks.{1}.project_to_out_channel",
            ),
            Rule(r"decoder_reassemble(\d+)_resample", "decoder.reassemble_blocks.{1}.upsample"),
            Rule(
                r"decoder_reassemble(\d+)_conv",
                "decoder.reassemble_blocks.{1}.project_to_feature_dim",
            ),
            Rule(
                _FUSION + r"res(\d)_conv(\d)",
                "decoder.fusion_blocks.{1}.residual_conv_block{2}.conv_{3}",
            ),
            Rule(
                _FUSION + r"res(\d)_bn(\d)",
                "decoder.fusion_blocks.{1}.residual_conv_block{2}.batch_norm_{3}",
            ),
            Rule(_FUSION + r"project", "decoder.fusion_blocks.{1}.project"),
            Rule(r"head_conv1", "segmentation_head.head.0"),
            Rule(r"head_bn", "segmentation_head.head.1"),
            Rule(r"head_conv", "segmentation_head.head.4"),
        ),
    ),
)

_ENC = "encoder.model."


def _count(state: dict, pattern: str) -> int:
    found = {int(m.group(1)) for k in state if (m := re.fullmatch(pattern, k))}
    return max(found) + 1 if found else 0


def _dpt_kwargs(state: dict[str, np.ndarray], options: dict[str, Any]) -> dict[str, Any]:
    """The DPT's read-block count, widths and readout, and its ViT's shape, from smp weights."""
    depth = _count(state, r"decoder\.reassemble_blocks\.(\d+)\.project_to_out_channel\.weight")
    if not depth:
        raise PortError(
            "missing key 'decoder.reassemble_blocks.0.project_to_out_channel.weight'"
            " (not an smp DPT?)"
        )
    for key in (
        f"{_ENC}patch_embed.proj.weight",
        f"{_ENC}pos_embed",
        f"{_ENC}blocks.0.mlp.fc1.weight",
        "decoder.fusion_blocks.0.project.weight",
    ):
        if key not in state:
            raise PortError(f"missing key {key!r} (not an smp DPT with a timm ViT encoder?)")
    widths = [
        int(state[f"decoder.reassemble_blocks.{i}.project_to_out_channel.weight"].shape[0])
        for i in range(depth)
    ]
    readout = options.get("decoder_readout")
    if "decoder.projection_blocks.0.project.0.weight" in state:
        readout = readout or "cat"
    elif readout is None:
        raise PortError(
            "its readout is 'add' or 'ignore' (no projection weights), which the weights do not "
            "tell: give it with --smp-arg decoder_readout=add (or ignore)"
        )
    patch = state[f"{_ENC}patch_embed.proj.weight"]
    tokens = int(state[f"{_ENC}pos_embed"].shape[1]) - 1  # one class token
    grid = math.isqrt(tokens)
    if grid * grid != tokens:
        raise PortError(f"its position embedding has {tokens} patches, not a square grid")
    encoder = options["encoder"]
    variant = ENCODERS.get(encoder).obj.__kwdefaults__
    embed_dim = int(patch.shape[0])
    if embed_dim != variant["embed_dim"] and "encoder_kwargs.num_heads" not in options:
        raise PortError(
            f"its ViT is {embed_dim} wide where {encoder!r} is {variant['embed_dim']}: name its "
            "variant with --encoder, or give its heads with --smp-arg num_heads=N"
        )
    return {
        "encoder_depth": depth,
        "decoder_readout": readout,
        "decoder_intermediate_channels": widths,
        "decoder_fusion_channels": int(state["decoder.fusion_blocks.0.project.weight"].shape[0]),
        "encoder_kwargs": {
            "embed_dim": embed_dim,
            "patch_size": int(patch.shape[-1]),
            "img_size": grid * int(patch.shape[-1]),
            "depth": _count(state, r"encoder\.model\.blocks\.(\d+)\.norm1\.weight"),
            "mlp_ratio": int(state[f"{_ENC}blocks.0.mlp.fc1.weight"].shape[0]) / embed_dim,
        },
    }


def _dpt_unused(state: dict[str, np.ndarray], kwargs: dict[str, Any]) -> tuple[str, ...]:
    """The blocks after the last one read (timm builds them; DPT never runs them)."""
    depth = kwargs["encoder_kwargs"]["depth"]
    indices = kwargs.get("encoder_output_indices")
    if indices is None:
        return ()
    last = max(i % depth for i in indices)
    return tuple(rf"encoder\.model\.blocks\.{b}\..*" for b in range(last + 1, depth))


register_smp_model(
    "dpt",
    SmpModel(
        "DPT",
        "dpt",
        "smp.dpt",
        _dpt_kwargs,
        options={
            "decoder_readout": "decoder_readout",
            "encoder_output_indices": "encoder_output_indices",
            "num_heads": "encoder_kwargs.num_heads",
        },
        unused=_dpt_unused,
        head_key="segmentation_head.head.4.weight",
        encoder_prefix=_ENC,
    ),
)
