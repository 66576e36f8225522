"""Encoder helpers shared by the models that dilate their encoder (private: not a model)."""

from __future__ import annotations

import functools
import json
from typing import Any

import keras

from zoo.build_context import restoring_from_file
from zoo.models.base import encoder_features
from zoo.registry import encoder_info, list_encoders


def dilated_encoder_features(
    encoder: str,
    x: Any,
    encoder_kwargs: dict | None,
    encoder_weights: Any,
    output_stride: int,
    model: str,
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
    if output_stride == 32 or not isinstance(encoder, str) or encoder not in list_encoders():
        # (an unknown encoder raises in encoder_features, naming the choices)
        return encoder_features(encoder, x, kwargs, encoder_weights)
    supported = _output_strides(encoder)
    if output_stride not in supported:
        able = [e for e in list_encoders() if output_stride in _output_strides(e)]
        raise ValueError(
            f"Model `{model}` with output_stride={output_stride} needs an encoder that "
            f"supports dilation to stride {output_stride}; encoder {encoder!r} supports "
            f"output strides {list(supported)}. Encoders that do: {', '.join(able)}."
        )
    return encoder_features(encoder, x, {**kwargs, "output_stride": output_stride}, encoder_weights)


def _output_strides(encoder: str) -> tuple[int, ...]:
    return tuple(encoder_info(encoder).metadata.get("output_strides", (32,)))


@functools.lru_cache(maxsize=64)
def _dense_feature_layer(encoder: str, kwargs_json: str, stride: int) -> tuple[str, int]:
    """(layer name, output index) producing the undilated encoder's stride-`stride` map."""
    kwargs = json.loads(kwargs_json)
    image = keras.Input((None, None, 3))
    # A throwaway graph: the builder itself (not `encoder_features`, which records the model
    # being built), and never reading pretrained weights for it.
    with restoring_from_file():
        features = encoder_info(encoder).obj(image, **kwargs)
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
