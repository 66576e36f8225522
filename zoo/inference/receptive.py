"""Receptive field of a functional model, from its graph: how far an output pixel can see.

`receptive_field(model)` walks the layers once and bounds, for every tensor, the distance (in
input pixels) from an output position to the farthest input pixel it depends on, and the
distance between two neighbouring positions of the tensor (its stride, "jump"). The bound is
deliberately conservative (each strided, padded or resampling layer adds its worst-case
offset), so tiles whose overlap margin is at least the radius give the same logits as the
whole image (see docs/inference.md). Any layer that mixes all positions (global pooling,
attention, layer norm over space) gives an infinite radius: the model has global context.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import keras

# Layers that never mix spatial positions (per-pixel or per-channel only).
_POINTWISE = (
    keras.layers.InputLayer,
    keras.layers.BatchNormalization,
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.PReLU,
    keras.layers.ELU,
    keras.layers.Softmax,
    keras.layers.Dropout,
    keras.layers.SpatialDropout2D,
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.Dense,
    keras.layers.EinsumDense,
    keras.layers.Rescaling,
    keras.layers.Normalization,
    keras.layers.Identity,
)
# By class name: project layers (their modules import this package's models) and Keras
# internals of applications models.
_POINTWISE_NAMES = {
    "PadToMultiple",  # pads at the bottom/right: acts like the image border
    "CheckDivisible",
    "ChannelAffine",
    "CropToReference",
    "BroadcastSpatial",  # [pooled, reference]: global exactly when `pooled` is
    "LayerScale",
    "StochasticDepth",
    "DropPath",
    "GELU",
}
_GLOBAL_NAMES = {
    "EfficientSelfAttention",  # zoo.layers: attention over all pixels
    "PositionAttention",
    # A ViT's token layers: attention over all patches, a class token that summarizes the
    # image, position embeddings resized to the whole image's grid.
    "QKVAttention",
    "ClassToken",
    "PositionEmbedding",
    "PrefixTokenReadout",
    # PyTorch's adaptive bins: where a bin's window lies depends on the whole image's size.
    "AdaptiveAveragePooling2D",
}
_GLOBAL = (
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.MultiHeadAttention,
    keras.layers.Attention,
)
_MERGES = (
    keras.layers.Add,
    keras.layers.Subtract,
    keras.layers.Multiply,
    keras.layers.Average,
    keras.layers.Maximum,
    keras.layers.Minimum,
    keras.layers.Concatenate,
)


@dataclass(frozen=True)
class Field:
    """Receptive-field bound of one tensor: `radius` in input pixels, `jump` its stride."""

    radius: float
    jump: float


def _pair(value: Any) -> int:
    return int(max(value)) if isinstance(value, (list, tuple)) else int(value)


def _conv(f: Field, kernel: int, stride: int, dilation: int, padding: str) -> Field:
    # "same": half the dilated kernel on each side; "valid" shifts the grid by up to the
    # whole kernel. A stride adds up to stride - 1 input steps of phase offset.
    reach = (kernel - 1) * dilation * (0.5 if padding == "same" else 1.0)
    return Field(f.radius + (reach + stride - 1) * f.jump, f.jump * stride)


def _merge(fields: list[Field]) -> Field:
    return Field(max(x.radius for x in fields), min(x.jump for x in fields))


def _flat(args: Any) -> list[Field]:
    if isinstance(args, Field):
        return [args]
    out: list[Field] = []
    for a in args:
        out.extend(_flat(a))
    return out


def _layer_field(layer: Any, args: tuple, kwargs: dict) -> Field:
    fields = _flat([a for a in args if isinstance(a, (Field, list, tuple))])
    name = type(layer).__name__
    if isinstance(layer, keras.Model):
        return _run(layer, fields[0])
    if name == "TokensToGrid":  # [grid, prefix] out, both from attention-mixed tokens
        return [Field(math.inf, fields[1].jump)] * 2
    if isinstance(layer, _GLOBAL) or name in _GLOBAL_NAMES:
        return Field(math.inf, fields[0].jump)
    if isinstance(layer, keras.layers.LayerNormalization):
        axes = [layer.axis] if isinstance(layer.axis, int) else list(layer.axis)
        if all(a in (-1, 3) for a in axes):
            return fields[0]
        return Field(math.inf, fields[0].jump)
    if isinstance(layer, _POINTWISE) or name in _POINTWISE_NAMES or isinstance(layer, _MERGES):
        return _merge(fields)
    if isinstance(layer, keras.layers.Conv2DTranspose):
        s = _pair(layer.strides)
        f = fields[0]
        return Field(f.radius + (_pair(layer.kernel_size) / s + 1) * f.jump, f.jump / s)
    if isinstance(
        layer,
        (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D),
    ):
        return _conv(
            fields[0],
            _pair(layer.kernel_size),
            _pair(layer.strides),
            _pair(layer.dilation_rate),
            layer.padding,
        )
    if isinstance(layer, (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)):
        return _conv(fields[0], _pair(layer.pool_size), _pair(layer.strides), 1, layer.padding)
    if isinstance(layer, (keras.layers.ZeroPadding2D, keras.layers.Cropping2D)):
        amounts = layer.padding if hasattr(layer, "padding") else layer.cropping
        pad = max(max(a) if isinstance(a, (list, tuple)) else a for a in amounts)
        f = fields[0]
        return Field(f.radius + pad * f.jump, f.jump)
    if isinstance(layer, keras.layers.UpSampling2D):
        # nearest: up to half a source step away; bilinear: the two nearest source pixels.
        f = fields[0]
        return Field(f.radius + f.jump, f.jump / _pair(layer.size))
    if name == "BilinearUpsampling":  # as bilinear UpSampling2D (aligned corners: the same
        f = fields[0]  # two nearest source pixels per axis)
        if layer.size is None:  # [x, reference]: x onto the reference's grid (its size only)
            return Field(f.radius + f.jump, fields[1].jump)
        return Field(f.radius + f.jump, f.jump / _pair(layer.size))
    if name == "HalvingMaxPooling2D":  # 2x2 / 2 windows (floor mode; a 1-pixel axis stays)
        return _conv(fields[0], 2, 2, 1, "valid")
    if name == "OverlapPatchEmbedding":  # k x k conv, stride s, k // 2 zeros on every side
        return _conv(fields[0], layer.patch_size, layer.strides, 1, "same")
    if name == "MixFFN":  # one 3x3 depthwise conv between per-pixel dense layers
        return _conv(fields[0], 3, 1, 1, "same")
    if name == "AllMLPFuse":  # per level: per-pixel map, bilinear up / 2x2 average, then sum
        out = []
        for stride, f in zip(layer.strides, fields):
            if stride > layer.target_stride:
                out.append(Field(f.radius + f.jump, f.jump * layer.target_stride / stride))
            elif stride < layer.target_stride:
                out.append(_conv(f, 2, 2, 1, "valid"))
            else:
                out.append(f)
        return _merge(out)
    if name == "UpsampleConcatConv2D":  # nearest 2x upsampling of x, concat skips, 3x3 conv
        x, skips = fields[0], fields[1:]
        up = Field(x.radius + x.jump, x.jump / 2)
        merged = _merge([up, *skips])
        return Field(merged.radius + merged.jump, merged.jump)
    raise ValueError(
        f"Cannot bound the receptive field of layer {layer.name!r} ({name}): add a rule for "
        "it in zoo/inference/receptive.py"
    )


def _run(model: Any, start: Field) -> Field:
    def call(op: Any, *args: Any, **kwargs: Any) -> Field:
        return _layer_field(op, args, kwargs)

    out = model._run_through_graph([start], operation_fn=lambda op: op, call_fn=call)
    return _flat(out)[0]


def receptive_field(model: Any) -> float:
    """Bound on the receptive-field radius of `model`'s output pixels, in input pixels.

    Returns ``math.inf`` for models with global context (image pooling, attention).

    Raises:
        ValueError: a layer this module has no rule for (named).

    Example:
        >>> model = zoo.create_model("unet", encoder="resnet18")  # doctest: +SKIP
        >>> receptive_field(model)  # doctest: +SKIP
        291.0
    """
    f = _run(model, Field(0.0, 1.0))
    return math.inf if math.isinf(f.radius) else float(math.ceil(f.radius))


def has_global_context(model: Any) -> bool:
    """True when some output pixel depends on every input pixel (`receptive_field` is inf)."""
    return math.isinf(receptive_field(model))


def receptive_overlap(radius: float, tile: int) -> float:
    """The smallest overlap for which blend="center" reproduces whole-image logits.

    A pixel taken from a tile is at least ``(tile - 1 - step) / 2`` pixels from that tile's
    inner edges, so the tile sees all of its receptive field when
    ``2 * radius + 1 <= tile - step`` (`radius` from `zoo.inference.receptive_field`).
    Strided models also need tile starts on their stride grid: image sides that are
    multiples of the divisor. Returns ``math.inf`` when no overlap below 1 suffices.
    """
    step = tile - 1 - 2 * math.ceil(radius)
    return math.inf if step < 1 else 1.0 - step / tile
