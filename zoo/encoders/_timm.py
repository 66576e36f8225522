"""What the native encoders of timm's families share (ConvNeXt, RegNet, MobileNetV3, Res2Net,
ResNeSt, GENet: smp's ``tu-*`` encoders): how smp's files name timm's keys, and registering a
variant with its docstring and timm's weights by tag."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from zoo import pretrained
from zoo.registry import register_encoder

TIMM_LICENSE = "Apache-2.0 (as timm publishes them)"


def smp_to_timm_key(key: str) -> str:
    """An smp ``tu-*`` key (timm's model under the encoder's ``model.``) as timm's own
    checkpoint names it, smp's ``encoder.`` kept; older smp files (``timm-*``) have no
    ``model.``."""
    return _SMP_KEY.sub(r"\1", key)


_SMP_KEY = re.compile(r"^(encoder\.)?model\.")


def register_timm_encoder(
    key: str,
    builder: Callable[..., Any],
    *,
    description: str,
    args: str,
    tiny_config: Mapping[str, Any],
    table: str,
    first_conv: str,
    tags: Sequence[str],
    strides: tuple[int, ...] = (2, 4, 8, 16, 32),
    license: Callable[[str], str] = lambda tag: TIMM_LICENSE,
    normalization: pretrained.Normalization | None = pretrained.IMAGENET,
    tag_normalization: Mapping[str, pretrained.Normalization] | None = None,
    rename: Callable[[str], str] = smp_to_timm_key,
) -> None:
    """Register timm variant `key`'s `builder` (its docstring: `description`, the common
    arguments around `args`, the family's own, each line ``"    name: what.\\n"``) and its
    weights: ``"imagenet"`` = timm's default tag ``tags[0]``, every tag by name (fetched from
    ``timm/<key>.<tag>``), timm and smp files through the port `table` (keys `rename`d).

    Args:
        license: the license of a tag's weights.
        normalization: the preprocessing of the variant's weights (local files included).
        tag_normalization: tags trained with another preprocessing.
    """
    shown = ", ".join(map(str, strides)) if strides[0] != 2 else "2 ... 32"
    if tags:
        weights = (
            "'imagenet' (timm's default weights of this variant), a timm tag of its\n"
            "        ImageNet weights, or the path of a timm or smp checkpoint (.safetensors,\n"
            "        .pth, .bin). Pretrained weights bring their normalization into the graph\n"
            "        (inputs stay in [0, 1]); other than 3 input channels adapt the first conv.\n"
        )
    else:
        weights = (
            "or the path of a timm or smp checkpoint (timm publishes none); other than 3\n"
            "        input channels adapt the first conv.\n"
        )
    builder.__name__ = builder.__qualname__ = key
    builder.__doc__ = (
        f"{description}\n\n"
        f"Returns ``{{stride: features}}`` (strides {shown}) for a tensor, or a `keras.Model`\n"
        "without one.\n\n"
        "Args:\n"
        "    inputs: image tensor, or None to get a standalone model.\n"
        "    input_shape: shape of the standalone model's input.\n"
        f"{args}"
        f"    weights: None (random), {weights}"
        "    input_normalization: 'weights' (the weights' normalization inside the model,\n"
        "        none for random weights), 'imagenet' (always) or None (the caller\n"
        "        normalizes).\n"
        "    input_range: [low, high] intensities mapped to [0, 1] first, or None.\n"
        "    output_stride: 32, 16 or 8; below 32 the last stages keep the stride and dilate\n"
        "        (timm's and smp's output_stride).\n"
        "    name: prefix of every layer name.\n"
    )
    register_encoder(
        key,
        strides=strides,
        tiny_config=dict(tiny_config),
        output_strides=(8, 16, 32),
        pretrained=bool(tags),
        description=description,
    )(builder)
    special = tag_normalization or {}

    def source(tag: str) -> pretrained.WeightsSource:
        return pretrained.timm_hub_source(key, tag, license(tag), special.get(tag))

    sources = {"imagenet": source(tags[0]), **{t: source(t) for t in sorted(tags)}} if tags else {}
    pretrained.register_encoder_weights(
        key,
        table=table,
        first_conv=first_conv,
        normalization=normalization,
        sources=sources,
        rename=rename,
    )
