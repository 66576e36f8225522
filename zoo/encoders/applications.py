"""Adapters exposing `keras.applications` backbones as zoo encoders.

Each adapter builds the application without its classifier, picks the layers that give the
deepest feature map at each stride, and maps our [0, 1] RGB input to the preprocessing the
application was trained with, inside the graph (a `ChannelAffine` layer, no `Lambda`).
``weights=None`` (the default) builds random weights; ``weights="imagenet"`` downloads the
pretrained ones, only when asked; a path loads a local Keras weights file of the
application without its top (the file keras.applications itself would download). Models
pass their `encoder_weights` here; ``encoder_kwargs={"weights": ...}`` is an alias. Batch
normalizations are switched to synchronized statistics and momentum 0.9, like the native
encoders.

Feature keys per adapter (stride -> layer):

- ``keras_resnet50``: 2, 4, 8, 16, 32
- ``keras_mobilenetv2``: 2, 4, 8, 16, 32
- ``keras_efficientnetv2b0``: 2, 4, 8, 16, 32
- ``keras_convnext_tiny``: 4, 8, 16, 32 (ConvNeXt's patchify stem starts at stride 4)
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import keras

from zoo.build_context import is_restoring
from zoo.encoders._common import run_encoder
from zoo.layers import ChannelAffine
from zoo.layers.blocks import BN_MOMENTUM
from zoo.pretrained import copy_adapting_first_conv
from zoo.registry import register_encoder

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Caffe-style ImageNet mean of BGR pixels in [0, 255] (keras ResNet50's "caffe" mode).
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@dataclass(frozen=True)
class _Spec:
    app: Callable[..., keras.Model]
    layers: dict[int, str]
    scale: tuple[float, ...] | float
    offset: tuple[float, ...] | float
    reverse_channels: bool = False
    extra: tuple[tuple[str, object], ...] = ()


_TORCH_SCALE = tuple(1.0 / s for s in IMAGENET_STD)
_TORCH_OFFSET = tuple(-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD))

SPECS = {
    "keras_resnet50": _Spec(
        keras.applications.ResNet50,
        {
            2: "conv1_relu",
            4: "conv2_block3_out",
            8: "conv3_block4_out",
            16: "conv4_block6_out",
            32: "conv5_block3_out",
        },
        scale=255.0,
        offset=tuple(-m for m in CAFFE_MEAN_BGR),
        reverse_channels=True,
    ),
    "keras_mobilenetv2": _Spec(
        keras.applications.MobileNetV2,
        {
            2: "block_1_expand_relu",
            4: "block_3_expand_relu",
            8: "block_6_expand_relu",
            16: "block_13_expand_relu",
            32: "out_relu",
        },
        scale=2.0,
        offset=-1.0,
    ),
    "keras_efficientnetv2b0": _Spec(
        keras.applications.EfficientNetV2B0,
        {
            2: "block1a_project_activation",
            4: "block2b_add",
            8: "block3b_add",
            16: "block5e_add",
            32: "top_activation",
        },
        scale=_TORCH_SCALE,
        offset=_TORCH_OFFSET,
        extra=(("include_preprocessing", False),),
    ),
    "keras_convnext_tiny": _Spec(
        keras.applications.ConvNeXtTiny,
        {
            4: "convnext_tiny_stage_0_block_2_identity",
            8: "convnext_tiny_stage_1_block_2_identity",
            16: "convnext_tiny_stage_2_block_8_identity",
            32: "convnext_tiny_stage_3_block_2_identity",
        },
        scale=_TORCH_SCALE,
        offset=_TORCH_OFFSET,
        extra=(("include_preprocessing", False),),
    ),
}


def application_features(
    x, key: str, weights: str | None, name: str, **app_kwargs
) -> dict[int, object]:
    """Feature maps ``{stride: tensor}`` of the application `key` applied to [0, 1] images `x`.

    With pretrained weights, 1 input channel is seen as RGB (the gray image repeated: what
    the RGB network computes on it), and 2 or more than 3 channels adapt the first conv
    (`zoo.pretrained.adapt_input_kernel`; channel ``i`` takes RGB channel ``i % 3``'s kernel
    and normalization).
    """
    spec = SPECS[key]
    pretrained_graph = weights is not None  # the graph: the same when a saved model loads
    if is_restoring():
        weights = None  # a saved model's own file holds the weights: no download on load
    elif weights not in (None, "imagenet"):
        # A local Keras weights file of the application without its top (what
        # keras.applications downloads for include_top=False), loaded by keras.applications.
        if not isinstance(weights, (str, os.PathLike)) or not Path(weights).is_file():
            raise ValueError(
                "Invalid value for argument `encoder_weights`: expected None, 'imagenet' or "
                f"the path of an existing Keras weights file of {spec.app.__name__} without "
                f"its top (encoder {key!r}). Received: encoder_weights={weights!r}"
            )
        weights = str(weights)
    channels = int(x.shape[-1])
    scale, offset, reverse = spec.scale, spec.offset, spec.reverse_channels
    if pretrained_graph and channels == 1:
        x = keras.layers.Concatenate(name=f"{name}_gray_to_rgb")([x, x, x])
    elif pretrained_graph and channels != 3:
        # Channel i is "RGB channel i % 3": undo the BGR order of Caffe-style models and
        # cycle the per-channel values (the kernel is reordered alike when copied).
        if reverse:
            scale, offset = _rgb_order(scale), _rgb_order(offset)
        scale, offset, reverse = _cycle(scale, channels), _cycle(offset, channels), False
    x = ChannelAffine(scale, offset, reverse, name=f"{name}_preprocess")(x)
    shape = tuple(x.shape[1:])

    def build(weights, shape):
        with warnings.catch_warnings():
            # "This model usually expects 1 or 3 input channels": we adapt it on purpose.
            warnings.filterwarnings("ignore", message=".*expects 1 or 3 input channels")
            return spec.app(
                include_top=False,
                weights=weights,
                input_shape=shape,
                **dict(spec.extra),
                **app_kwargs,
            )

    if weights is not None and shape[-1] != 3:
        app = build(None, shape)
        source = build(weights, shape[:2] + (3,))
        copy_adapting_first_conv(source, app, shape[-1], bgr=spec.reverse_channels)
    else:
        app = build(weights, shape)
    for layer in app.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            # Read at call time: global-batch statistics under MirroredStrategy.
            layer.synchronized = True
            layer.momentum = BN_MOMENTUM
    pyramid = keras.Model(
        app.input,
        {stride: app.get_layer(layer).output for stride, layer in spec.layers.items()},
        name=f"{name}_{key}",
    )
    return pyramid(x)


def _rgb_order(values):
    return tuple(reversed(values)) if isinstance(values, tuple) else values


def _cycle(values, channels: int):
    if not isinstance(values, tuple):
        return values
    return tuple(values[i % len(values)] for i in range(channels))


def _register(key: str, strides: tuple[int, ...], description: str, tiny: dict) -> None:
    def builder(
        inputs=None,
        *,
        input_shape: Sequence[int | None] = (None, None, 3),
        weights: str | None = None,
        name: str = "encoder",
        **app_kwargs,
    ):
        return run_encoder(
            inputs,
            input_shape,
            name,
            lambda x: application_features(x, key, weights, name, **app_kwargs),
        )

    builder.__name__ = builder.__qualname__ = key
    builder.__doc__ = (
        f"{description}\n\n"
        "Args:\n"
        "    inputs: image tensor in [0, 1], or None to get a standalone model.\n"
        "    input_shape: shape of the standalone model's input.\n"
        "    weights: None (random), 'imagenet' (downloads the pretrained weights) or the\n"
        "        path of a Keras weights file of the application without its top.\n"
        "    name: prefix of the layer names.\n"
        "    **app_kwargs: passed to the keras.applications constructor (e.g. alpha).\n"
    )
    register_encoder(
        key,
        strides=strides,
        tiny_config=tiny,
        output_strides=(32,),
        pretrained=True,
        description=description,
    )(builder)


_FULL = (2, 4, 8, 16, 32)
_register("keras_resnet50", _FULL, "keras.applications ResNet50 (caffe preprocessing).", {})
_register(
    "keras_mobilenetv2", _FULL, "keras.applications MobileNetV2 (alpha option).", {"alpha": 0.35}
)
_register("keras_efficientnetv2b0", _FULL, "keras.applications EfficientNetV2B0.", {})
_register(
    "keras_convnext_tiny",
    (4, 8, 16, 32),
    "keras.applications ConvNeXtTiny (no stride-2 level).",
    {},
)
