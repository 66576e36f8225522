"""What every encoder builder shares: tensor-or-model calling convention and checks.

An encoder builder maps an image tensor to ``{stride: feature map}``. Called with a tensor
(how models use it) it adds its layers to the caller's graph and returns the dict; called
without one (``zoo.create_encoder(name, input_shape=...)``) it returns a standalone
`keras.Model` whose outputs are that dict.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from typing import Any

import keras

from zoo.layers.spatial import ChannelAffine

Features = dict[int, Any]

OUTPUT_STRIDES = (8, 16, 32)

# Encoder arguments a builder resolved while building (e.g. a keras-hub backbone's config read
# from its preset) that the model must save, so that loading never reads the source again.
_RECORDED = threading.local()


def record_encoder_kwargs(**kwargs: Any) -> None:
    """Called by a builder: save these `encoder_kwargs` with the model being built."""
    recorded = getattr(_RECORDED, "kwargs", None)
    if recorded is not None:  # None: a standalone encoder, no model config to save them in
        recorded.update(kwargs)


def recording_encoder_kwargs() -> dict[str, Any]:
    """Start collecting `record_encoder_kwargs` calls; returns the dict they fill."""
    _RECORDED.kwargs = {}
    return _RECORDED.kwargs


def stop_recording() -> None:
    if hasattr(_RECORDED, "kwargs"):
        del _RECORDED.kwargs


def run_encoder(
    inputs: Any,
    input_shape: Sequence[int | None],
    name: str,
    body: Callable[[Any], Features],
) -> Features | keras.Model:
    """Apply `body` to `inputs`, or wrap it in a `keras.Model` when `inputs` is None."""
    if inputs is not None:
        return body(inputs)
    image = keras.Input(shape=tuple(input_shape), name="image")
    return keras.Model(image, body(image), name=name)


def check_input_range(input_range: Any) -> tuple[float, float] | None:
    """Validate an encoder's `input_range` argument: None or ``[low, high]``, low < high."""
    if input_range is None:
        return None
    try:
        low, high = (float(v) for v in input_range)
    except (TypeError, ValueError):
        low = high = float("nan")
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(
            "Invalid value for argument `input_range`: expected None or [low, high], two "
            f"finite numbers with low < high. Received: input_range={input_range!r}"
        )
    return low, high


def apply_input_range(x: Any, bounds: tuple[float, float] | None, name: str) -> Any:
    """Map intensities linearly so that ``low -> 0`` and ``high -> 1`` (identity for None);
    `bounds` as `check_input_range` returns them.

    Computed in float32 whatever the precision policy: the values it spreads out (e.g. a
    12-bit camera's counts in a 16-bit file, at most 0.06 of [0, 1]) differ by less than
    bfloat16's resolution near them.
    """
    if bounds is None:
        return x
    low, high = bounds
    scale = 1.0 / (high - low)
    return ChannelAffine(scale, -low * scale, name=f"{name}_input_range", dtype="float32")(x)


def check_output_stride(output_stride: int) -> None:
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(
            "Invalid value for argument `output_stride`: expected one of "
            f"{OUTPUT_STRIDES}. Received: output_stride={output_stride!r}"
        )


def apply_weights_normalization(x: Any, normalization: Any, name: str) -> Any:
    """The pretrained weights' RGB normalization inside the graph (`zoo.pretrained.
    Normalization`, None: the identity), for a transformer whose patch embedding pads with
    zeros, so the normalization cannot be folded into it: a gray image is seen as RGB first
    (``{name}_gray_to_rgb``, the same function as the averaged kernel), then
    ``{name}_preprocess`` maps each channel ``x -> (x - mean) / std``."""
    if normalization is None:
        return x
    if int(x.shape[-1]) == 1:
        x = keras.layers.Concatenate(name=f"{name}_gray_to_rgb")([x, x, x])
    scale, offset = normalization.scale_offset(int(x.shape[-1]))
    return ChannelAffine(scale, offset, name=f"{name}_preprocess")(x)


INPUT_NORMALIZATIONS = ("weights", "imagenet", None)


def weights_normalization(encoder: str, weights: Any, input_normalization: Any) -> Any:
    """The normalization native encoder `encoder`'s graph applies for `weights`
    (`zoo.pretrained.native_normalization`, which checks them): with `input_normalization`
    "weights" the weights' own (none for random weights), "imagenet" ImageNet's mean and std
    whatever the weights (e.g. an smp model on Xception trained with ImageNet statistics),
    None none (the caller normalizes, as with smp)."""
    from zoo import pretrained

    if input_normalization not in INPUT_NORMALIZATIONS:
        raise ValueError(
            "Invalid value for argument `input_normalization`: expected one of "
            f"{INPUT_NORMALIZATIONS}. Received: input_normalization={input_normalization!r}"
        )
    normalization = pretrained.native_normalization(encoder, weights)
    if input_normalization == "imagenet":
        return pretrained.IMAGENET
    return None if input_normalization is None else normalization


def native_encoder(
    encoder: str,
    inputs: Any,
    input_shape: Sequence[int | None],
    weights: Any,
    input_normalization: Any,
    input_range: Any,
    name: str,
    features_fn: Callable[[Any], Features],
) -> Features | keras.Model:
    """What every native encoder builder does around its graph: `input_range` and the
    weights' normalization in front (both checked here, before anything is built),
    `features_fn(x) -> {stride: map}`, then `weights` loaded into the layers between."""
    from zoo import pretrained

    bounds = check_input_range(input_range)
    normalization = weights_normalization(encoder, weights, input_normalization)

    def body(x):
        x = apply_input_range(x, bounds, name)
        x = apply_weights_normalization(x, normalization, name)
        features = features_fn(x)
        pretrained.load_native(encoder, weights, x, features, name, normalization)
        return features

    return run_encoder(inputs, input_shape, name, body)
