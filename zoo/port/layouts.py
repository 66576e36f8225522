"""PyTorch -> Keras parameter layouts: the transforms and the kinds of layers they apply to.

`KINDS` says, per kind of our layer, which PyTorch parameter fills each of our variables and
with which transform from `TRANSFORMS`; `layer_kind` finds the kind from a layer's class.
Family modules extend both (`TRANSFORMS["name"] = fn`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

# A transform maps their array to our layout; it also sees our variable's shape (a depthwise
# kernel's channel multiplier is only known from our side). An array whose rank does not fit
# is returned as is, and the shape check then names both shapes.
Transform = Callable[[np.ndarray, tuple[int, ...]], np.ndarray]


# === Layout transforms (theirs -> ours) ===


def identity(x: np.ndarray, ours: tuple[int, ...]) -> np.ndarray:
    return x


def conv_kernel(x: np.ndarray, ours: tuple[int, ...]) -> np.ndarray:
    """``Conv2d.weight`` (out, in, kh, kw) -> ``Conv2D.kernel`` (kh, kw, in, out); 1D alike."""
    if x.ndim == 4:
        return np.transpose(x, (2, 3, 1, 0))
    if x.ndim == 3:  # Conv1d (out, in, k) -> Conv1D (k, in, out)
        return np.transpose(x, (2, 1, 0))
    return x


def depthwise_kernel(x: np.ndarray, ours: tuple[int, ...]) -> np.ndarray:
    """Depthwise ``Conv2d.weight`` (in * mult, 1, kh, kw) -> ``DepthwiseConv2D`` (kh, kw, in,
    mult); PyTorch puts multiplier ``m`` of input channel ``c`` at output ``c * mult + m``."""
    mult = int(ours[-1]) if len(ours) == 4 else 1
    if x.ndim != 4 or x.shape[1] != 1 or x.shape[0] % mult:
        return x
    return x.reshape(x.shape[0] // mult, mult, *x.shape[2:]).transpose(2, 3, 0, 1)


def dense_kernel(x: np.ndarray, ours: tuple[int, ...]) -> np.ndarray:
    """``Linear.weight`` (out, in) -> ``Dense.kernel`` (in, out)."""
    return np.transpose(x) if x.ndim == 2 else x


def half(index: int, then: Transform = identity) -> Transform:
    """Half `index` (0 first, 1 second) of a fused parameter's output axis, then `then`: one
    ``Linear`` computing two things, e.g. the original Mix Transformer's ``kv`` projection
    (keys are output rows ``[0, C)`` of ``kv.weight`` (2C, C_in), values ``[C, 2C)``), which
    we hold as two `Dense` layers."""

    def take(x: np.ndarray, ours: tuple[int, ...]) -> np.ndarray:
        if x.ndim == 0 or x.shape[0] % 2:
            return x  # the shape check names both shapes
        rows = x.shape[0] // 2
        return then(x[index * rows : (index + 1) * rows], ours)

    return take


# Extend with `TRANSFORMS["name"] = fn` (a family module) and use the name in a kind.
TRANSFORMS: dict[str, Transform] = {
    "identity": identity,
    "conv": conv_kernel,
    "depthwise": depthwise_kernel,
    "dense": dense_kernel,
    "first_half": half(0),
    "second_half": half(1),
    "dense_first_half": half(0, dense_kernel),
    "dense_second_half": half(1, dense_kernel),
}


# === Layer kinds: our variable name -> (their parameter suffix, transform name) ===
# Variable names are Keras 3's (`DepthwiseConv2D` holds ``kernel``, not ``depthwise_kernel``
# as `SeparableConv2D` does; tests/test_port.py checks every kind against its real layer).

KINDS: dict[str, dict[str, tuple[str, str]]] = {
    "conv": {"kernel": ("weight", "conv"), "bias": ("bias", "identity")},
    "depthwise": {"kernel": ("weight", "depthwise"), "bias": ("bias", "identity")},
    "dense": {"kernel": ("weight", "dense"), "bias": ("bias", "identity")},
    # A Dense holding one half of a fused Linear's outputs (see `half`).
    "dense_first_half": {
        "kernel": ("weight", "dense_first_half"),
        "bias": ("bias", "first_half"),
    },
    "dense_second_half": {
        "kernel": ("weight", "dense_second_half"),
        "bias": ("bias", "second_half"),
    },
    "batch_norm": {
        "gamma": ("weight", "identity"),
        "beta": ("bias", "identity"),
        "moving_mean": ("running_mean", "identity"),
        "moving_variance": ("running_var", "identity"),
    },
    # LayerNorm / GroupNorm: affine parameters only.
    "norm": {"gamma": ("weight", "identity"), "beta": ("bias", "identity")},
    "embedding": {"embeddings": ("weight", "identity")},
}

# PyTorch bookkeeping that has no Keras counterpart: never reported as unexpected.
ALWAYS_IGNORED = (r"(.*\.)?num_batches_tracked",)


def layer_kind(layer: Any) -> str | None:
    """The `KINDS` entry for a Keras layer, from its class (None when unknown)."""
    import keras

    from zoo.layers.upsample_concat_conv2d import UpsampleConcatConv2D

    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return "depthwise"
    if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D, UpsampleConcatConv2D)):
        return "conv"
    if isinstance(layer, keras.layers.Conv2DTranspose):
        # ConvTranspose2d.weight (in, out, kh, kw) -> kernel (kh, kw, out, in): the same
        # transpose as a Conv2d's; "same" padding with kernel 4, stride 2 is PyTorch's padding 1.
        return "conv"
    if isinstance(layer, keras.layers.Dense):
        return "dense"
    if isinstance(layer, keras.layers.BatchNormalization):
        return "batch_norm"
    if isinstance(layer, (keras.layers.LayerNormalization, keras.layers.GroupNormalization)):
        return "norm"
    if isinstance(layer, keras.layers.Embedding):
        return "embedding"
    return None
