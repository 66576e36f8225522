"""Deep supervision: the weights of the output levels and the targets at each level's size.

A deep-supervised model returns ``[logits, aux_1, ..., aux_n]`` (full resolution first, then
auxiliary logits at their own, usually lower, resolutions). `losses.attach` applies the same
loss spec to every output, weighted per level by `level_weights`, against targets that
`NearestDownsample` brings to each output's size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from losses.base import PACKAGE


def level_weights(num_outputs: int, weights: Sequence[float] | None = None) -> list[float]:
    """The loss weight of each output, normalized to sum to 1.

    Args:
        num_outputs: how many outputs the model has (the full-resolution logits first).
        weights: relative weights, one per output, non-negative with a positive sum; None:
            nnU-Net's scheme, halving per level (1, 1/2, 1/4, ...).

    Returns:
        `num_outputs` floats summing to 1 (e.g. [2/3, 1/3] for two outputs by default).

    Example:

    ```python
    level_weights(3)             # [4/7, 2/7, 1/7]
    level_weights(2, [1.0, 1.0])  # [0.5, 0.5]
    ```
    """
    if weights is None:
        weights = [0.5**k for k in range(num_outputs)]
    else:
        ok = isinstance(weights, (list, tuple)) and all(
            isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w)
            for w in weights
        )
        if not ok or len(weights) != num_outputs:
            raise ValueError(
                "Invalid value for argument `level_weights`: expected a list of "
                f"{num_outputs} numbers, one per model output (full resolution first). "
                f"Received: level_weights={weights!r}"
            )
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(
                "Invalid value for argument `level_weights`: expected non-negative weights "
                f"with a positive sum. Received: level_weights={list(weights)!r}"
            )
    total = float(sum(weights))
    return [float(w) / total for w in weights]


@keras.saving.register_keras_serializable(package=PACKAGE)
class NearestDownsample(keras.layers.Layer):
    """A target map (mask or weight map) sampled at the spatial size of a reference tensor.

    Output pixel ``(i, j)`` takes the input pixel that contains its centre (half-pixel
    centres, as `tf.image.resize`'s nearest neighbour): row
    ``floor((i + 0.5) * H / h)``, likewise for columns. For a 2x reduction that is the odd
    rows and columns, the pixel a stride-2 'same' convolution centres on. Values are copied,
    never averaged: labels (and `ignore_index`) stay labels, and each weight stays with the
    label of its own pixel (zero-weight pixels stay excluded).

    Call arguments:
        inputs: ``[target (B, H, W, C), reference (B, h, w, ...)]``.

    Returns:
        (B, h, w, C), the target's dtype.

    Example:

    ```python
    mask_2 = NearestDownsample()([mask, aux_logits])
    ```
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs["dtype"] = "float32"  # weight maps stay float32 under mixed precision
        super().__init__(**kwargs)
        self.built = True

    @staticmethod
    def _indices(size_in: Any, size_out: Any) -> Any:
        # floor((2i + 1) * H / (2h)) in integers: exact for every ratio.
        i = ops.arange(size_out, dtype="int32")
        return ops.floor_divide((2 * i + 1) * size_in, 2 * size_out)

    def call(self, inputs: Sequence[Any]) -> Any:
        target, reference = inputs
        static_in, static_out = tuple(target.shape[1:3]), tuple(reference.shape[1:3])
        if None not in static_in and static_in == static_out:
            return target
        shape_in, shape_out = ops.shape(target), ops.shape(reference)
        rows = self._indices(shape_in[1], shape_out[1])
        cols = self._indices(shape_in[2], shape_out[2])
        return ops.take(ops.take(target, rows, axis=1), cols, axis=2)

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
        target, reference = input_shape
        return (target[0], reference[1], reference[2], target[3])

    def compute_output_spec(self, inputs: Sequence[Any]) -> Any:
        target, reference = inputs
        shape = (target.shape[0], reference.shape[1], reference.shape[2], target.shape[3])
        return keras.KerasTensor(shape, dtype=target.dtype)
