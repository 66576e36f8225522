"""What every encoder builder shares: tensor-or-model calling convention and checks.

An encoder builder maps an image tensor to ``{stride: feature map}``. Called with a tensor
(how models use it) it adds its layers to the caller's graph and returns the dict; called
without one (``zoo.create_encoder(name, input_shape=...)``) it returns a standalone
`keras.Model` whose outputs are that dict.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras

Features = dict[int, Any]

OUTPUT_STRIDES = (8, 16, 32)


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


def check_output_stride(output_stride: int) -> None:
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(
            "Invalid value for argument `output_stride`: expected one of "
            f"{OUTPUT_STRIDES}. Received: output_stride={output_stride!r}"
        )
