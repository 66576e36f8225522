"""Hugging Face transformers SegFormer models -> zoo `segformer` (``python -m zoo.port
transformers``).

A ``SegformerForSemanticSegmentation`` state dict (``model.safetensors`` or
``pytorch_model.bin`` of e.g. ``nvidia/segformer-b0-finetuned-ade-512-512``, or what
``save_pretrained`` writes) becomes a `segformer` with the same encoder and decode head. The
architecture is read from the weights: the encoder (``mit_b0`` ... ``mit_b5`` from its widths
and depths; other widths and depths become ``encoder_kwargs``, their number of heads is not
in the weights and defaults to the published variants' (1, 2, 5, 8)), the number of classes,
the decoder width and the input channels. The tables are ``"mit.transformers"`` (bound to
``segformer.encoder.``) and ``"transformers.segformer"`` (``decode_head.``),
`zoo/port/tables/mit.py`.

transformers returns logits at stride 4, the output of our layer ``head_conv``; the zoo model
upsamples them to the input size (4x bilinear with aligned corners, as smp's Segformer; the
transformers pipeline resizes with ``align_corners=False``). Like every port, the model takes
[0, 1] images with the ImageNet normalization inside (``normalization="imagenet"``, the
default for 3 channels) or leaves it to the caller (``"none"``).

Encoder-only files (``SegformerModel``, ``SegformerForImageClassification`` such as
``nvidia/mit-b0``) go into any model as ``encoder_weights=path`` instead.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from zoo.errors import ConfigError
from zoo.port.mapping import PortError, get_table
from zoo.port.smp import build_and_assign, check_paths, save
from zoo.port.state_dict import load_state_dict

ENCODER = "segformer.encoder."
HEAD_KEY = "decode_head.classifier.weight"


def _key(state: dict[str, np.ndarray], key: str, source: str) -> np.ndarray:
    if key not in state:
        raise PortError(
            f"Cannot port {source}: missing key {key!r} (not a transformers "
            "SegformerForSemanticSegmentation state dict? An encoder-only file such as "
            "nvidia/mit-b0 goes into any model as encoder_weights=PATH)"
        )
    return state[key]


def segformer_arguments(state: dict[str, np.ndarray], source: str) -> dict[str, Any]:
    """The `segformer` arguments a transformers SegFormer state dict was trained with:
    ``encoder``, ``encoder_kwargs``, ``num_classes``, ``decoder_channels``."""
    from zoo.encoders.mit import SR_RATIOS, VARIANTS

    dims, depths, reductions = [], [], []
    for s in range(4):
        weight = _key(state, f"{ENCODER}patch_embeddings.{s}.proj.weight", source)
        dims.append(int(weight.shape[0]))
        block = re.compile(re.escape(f"{ENCODER}block.{s}.") + r"(\d+)\.")
        depths.append(len({m.group(1) for k in state if (m := block.match(k))}))
        kernel = state.get(f"{ENCODER}block.{s}.0.attention.self.sr.weight")
        reductions.append(1 if kernel is None else int(kernel.shape[-1]))
    names = [n for n, (d, b) in VARIANTS.items() if (list(d), list(b)) == (dims, depths)]
    encoder_kwargs: dict[str, Any] = {}
    if not names:
        encoder_kwargs.update(embed_dims=tuple(dims), depths=tuple(depths))
    if tuple(reductions) != SR_RATIOS:
        encoder_kwargs["sr_ratios"] = tuple(reductions)
    head = _key(state, HEAD_KEY, source)
    return {
        "encoder": names[0] if names else "mit_b0",
        "encoder_kwargs": encoder_kwargs,
        "num_classes": int(head.shape[0]),
        "decoder_channels": int(head.shape[1]),
    }


def port_transformers(
    checkpoint: str | os.PathLike,
    num_classes: int | None = None,
    normalization: str | None = None,
    encoder_kwargs: dict[str, Any] | None = None,
) -> Any:
    """A zoo `segformer` with the weights of a transformers SegFormer checkpoint.

    Args:
        checkpoint: a ``SegformerForSemanticSegmentation`` state dict (``.safetensors``, or
            ``.bin``/``.pth`` read through a process with torch).
        num_classes: checked against the weights when given (they tell it).
        normalization: "imagenet" (the model normalizes [0, 1] images inside) or "none";
            default: "imagenet" for 3 input channels, "none" otherwise.
        encoder_kwargs: more encoder arguments, for what the weights do not record (the
            ``num_heads`` of a non-standard encoder).

    Returns:
        The zoo model (inference ready; its config records the checkpoint as
        `encoder_weights`, which loading a saved copy never reads).

    Raises:
        ValueError / PortError / FileNotFoundError: one line naming the bad value, key or
            file.
    """
    source = str(checkpoint)
    state = load_state_dict(checkpoint)
    arguments = segformer_arguments(state, source)
    if num_classes is not None and num_classes != arguments["num_classes"]:
        raise ConfigError(
            f"Invalid value for argument `num_classes`: the checkpoint's head has "
            f"{arguments['num_classes']} classes. Received: num_classes={num_classes!r}"
        )
    arguments["encoder_kwargs"].update(encoder_kwargs or {})
    channels = int(state[f"{ENCODER}patch_embeddings.0.proj.weight"].shape[1])
    table = get_table("mit.transformers").bind(ours="encoder_", theirs=ENCODER) + get_table(
        "transformers.segformer"
    )
    return build_and_assign(
        state, table, source, normalization, channels, model="segformer", **arguments
    )


def main(args: Any) -> str:
    """``python -m zoo.port transformers``: port and save; returns the one-line summary."""
    checkpoint: Path = check_paths(args)
    net = port_transformers(checkpoint, args.num_classes, args.normalization)
    encoder = net.get_config()["encoder"]
    return save(net, args, f"transformers SegformerForSemanticSegmentation ({encoder}, ")
