"""Argument checks and encoder helpers shared by the smp-parity models (private: not a model)."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from typing import Any

import keras

import zoo
from zoo.models.base import encoder_features
from zoo.saving import restoring_from_file


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """`value` if it is one of `choices` (bools never pass for ints), else a ValueError."""
    if isinstance(value, bool) != isinstance(choices[0], bool) or value not in choices:
        raise ValueError(
            f"Invalid value for argument `{name}`: expected one of {tuple(choices)}. "
            f"Received: {name}={value!r}"
        )
    return value


def check_rate(name: str, value: Any) -> float:
    """A dropout rate in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(
            f"Invalid value for argument `{name}`: expected a rate in [0, 1). "
            f"Received: {name}={value!r}"
        )
    return float(value)


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(
            f"Invalid value for argument `{name}`: expected True or False. "
            f"Received: {name}={value!r}"
        )
    return value


def check_rates(name: str, rates: Any, count: int) -> tuple[int, ...]:
    """`count` positive integer atrous rates."""
    ok = isinstance(rates, (list, tuple)) and len(rates) == count
    ok = ok and all(isinstance(r, int) and not isinstance(r, bool) and r > 0 for r in rates)
    if not ok:
        raise ValueError(
            f"Invalid value for argument `{name}`: expected {count} positive integers. "
            f"Received: {name}={rates!r}"
        )
    return tuple(rates)


def dilated_encoder_features(
    encoder: str, x: Any, encoder_kwargs: dict | None, output_stride: int, model: str
) -> dict[int, Any]:
    """The encoder's features with its last stages dilated down to `output_stride` (DeepLab).

    The model's own `output_stride` argument sets it: `encoder_kwargs` must not, and an
    encoder that cannot dilate (no `output_strides` entry for it) raises naming the encoders
    that can.
    """
    kwargs = dict(encoder_kwargs or {})
    if "output_stride" in kwargs:
        raise ValueError(
            f"Set the output stride with the model's `output_stride` argument, not in "
            f"`encoder_kwargs`. Received: encoder_kwargs={encoder_kwargs!r}"
        )
    if output_stride == 32:
        return encoder_features(encoder, x, kwargs)
    if not isinstance(encoder, str) or encoder not in zoo.list_encoders():
        return encoder_features(encoder, x, kwargs)  # raises naming the choices
    supported = zoo.encoder_info(encoder).metadata.get("output_strides", (32,))
    if output_stride not in supported:
        able = [e for e in zoo.list_encoders() if output_stride in _output_strides(e)]
        raise ValueError(
            f"Model `{model}` with output_stride={output_stride} needs an encoder that "
            f"supports dilation to stride {output_stride}; encoder {encoder!r} supports "
            f"output strides {list(supported)}. Encoders that do: {', '.join(able)}."
        )
    return encoder_features(encoder, x, {**kwargs, "output_stride": output_stride})


def _output_strides(encoder: str) -> tuple[int, ...]:
    return tuple(zoo.encoder_info(encoder).metadata.get("output_strides", (32,)))


@functools.lru_cache(maxsize=64)
def _dense_feature_layer(encoder: str, kwargs_json: str, stride: int) -> tuple[str, int]:
    """(layer name, output index) producing the undilated encoder's stride-`stride` map."""
    kwargs = json.loads(kwargs_json)
    image = keras.Input((None, None, 3))
    with restoring_from_file():  # a throwaway graph: never read pretrained weights for it
        features = encoder_features(encoder, image, kwargs)
    history = features[stride]._keras_history
    return history.operation.name, history.tensor_index


def stage_output(
    features: dict[int, Any],
    encoder: str,
    encoder_kwargs: dict | None,
    dense_stride: int,
    output_stride: int,
) -> Any:
    """The output of the encoder stage that has stride `dense_stride` when nothing is dilated.

    Without dilation that is ``features[dense_stride]``. With the encoder dilated to
    `output_stride` (<= `dense_stride`), the key holds a later stage: e.g. at output stride 16
    key 16 is a ResNet's last stage, while smp's PAN also uses the stage before it (stride 16
    too). The encoder's layers keep their names when dilated, so the layer that gives the
    undilated encoder's stride-`dense_stride` map (read once from a throwaway build) is looked
    up in this graph, walking back from the deepest map.
    """
    if output_stride == 32 or dense_stride < output_stride:
        return features[dense_stride]
    kwargs = {k: v for k, v in (encoder_kwargs or {}).items() if k != "output_stride"}
    name, index = _dense_feature_layer(encoder, json.dumps(kwargs, sort_keys=True), dense_stride)
    pending, seen = [features[max(features)]], set()
    while pending:
        tensor = pending.pop()
        operation, node_index, tensor_index = tensor._keras_history
        if operation.name == name and tensor_index == index:
            return tensor
        for parent in operation._inbound_nodes[node_index].input_tensors:
            if id(parent) not in seen:
                seen.add(id(parent))
                pending.append(parent)
    raise ValueError(  # an encoder whose dilated graph renames its layers
        f"Encoder {encoder!r} at output_stride={output_stride} has no layer {name!r}, which "
        f"gives its undilated stride-{dense_stride} map."
    )
