"""keras-hub backbones as zoo encoders (the ``hub`` extra: ``pip install -e ".[hub]"``).

``encoder="keras_hub"`` turns a keras-hub backbone with feature-pyramid outputs (ResNet,
CSPNet, DenseNet, EfficientNet, MiT, ...) into our ``{stride: features}`` contract: its
``pyramid_outputs`` ``P1``..``P5`` become strides 2..32 (most backbones start at ``P2``,
stride 4). The backbone comes from a preset, a Kaggle / Hugging Face preset name such as
``"resnet_50_imagenet"`` or a local preset directory (``backbone.save_to_preset(dir)``):

    zoo.create_model("unet", encoder="keras_hub", encoder_weights="resnet_50_imagenet")
    zoo.create_model("fpn", encoder="keras_hub", encoder_weights="/data/my_preset")
    # the architecture only, random weights:
    zoo.create_model("unet", encoder="keras_hub", encoder_kwargs={"preset": "resnet_50_imagenet"})

The preset's image converter (``x * scale + offset`` for pixels in [0, 255]) becomes a
`ChannelAffine` in front of the backbone, so the model takes [0, 1] images like every zoo
model. When a model is built, the backbone's architecture (its Keras config) and that
preprocessing are written into the model's ``encoder_kwargs`` (``backbone``,
``preprocessing``): a saved model rebuilds from its own file and never reads the preset.

Input channels: a pretrained backbone on 1 channel sees the gray image as RGB (the gray
channel normalized three ways, exactly what the RGB network computes on it repeated);
on 2 or more than 3 channels its first convolution is adapted
(`zoo.pretrained.adapt_input_kernel`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras

from zoo.build_context import is_restoring
from zoo.encoders._common import record_encoder_kwargs, run_encoder
from zoo.layers import ChannelAffine
from zoo.layers.blocks import BN_MOMENTUM
from zoo.pretrained import copy_adapting_first_conv
from zoo.registry import register_encoder

INSTALL = 'pip install -e ".[hub]" (or pip install keras-hub)'
PRESET = "preset"  # default of `preprocessing`: read it from the preset


def _keras_hub():
    try:
        import keras_hub
    except ImportError:
        raise ValueError(
            f"Invalid value for argument `encoder`: encoder 'keras_hub' needs the keras-hub "
            f"package: {INSTALL}. Received: encoder='keras_hub'"
        ) from None
    return keras_hub


def _load_failure(preset: str, err: Exception) -> ValueError:
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    local = (
        ""
        if Path(preset).is_dir()
        else (
            "; on a machine without network, save the preset on one with "
            "(keras_hub.models.Backbone.from_preset(NAME).save_to_preset(DIR), plus the image "
            "converter) and pass the directory"
        )
    )
    return ValueError(
        f"Invalid value for argument `encoder_weights`: could not load keras-hub preset "
        f"{preset!r} ({type(err).__name__}: {first[:300]}){local}. "
        f"Received: encoder_weights={preset!r}"
    )


def _preset_preprocessing(preset: str) -> dict[str, Any] | None:
    """The preset's image converter as ``{"scale", "offset"}`` for [0, 1] inputs, or None."""
    keras_hub = _keras_hub()
    if Path(preset).is_dir() and not (Path(preset) / "image_converter.json").is_file():
        return None
    try:
        converter = keras_hub.layers.ImageConverter.from_preset(preset)
    except Exception:  # noqa: BLE001  (no converter in this preset: [0, 1] inputs as they are)
        return None
    scale, offset = converter.scale, converter.offset
    # Converters expect pixels in [0, 255]; our inputs are in [0, 1].
    scale = 1.0 if scale is None else scale
    scale = [float(s) * 255.0 for s in scale] if isinstance(scale, Sequence) else float(scale) * 255
    offset = 0.0 if offset is None else offset
    offset = [float(o) for o in offset] if isinstance(offset, Sequence) else float(offset)
    return {"scale": scale, "offset": offset}


def _serialize(backbone: keras.Model, channels: int) -> dict[str, Any]:
    config = keras.saving.serialize_keras_object(backbone)
    config.pop("build_config", None)
    config["config"]["image_shape"] = [None, None, channels]
    config["config"]["dtype"] = None  # follow the global (mixed) precision policy
    return config


def _from_config(config: dict[str, Any], channels: int) -> keras.Model:
    _keras_hub()  # registers keras_hub's classes
    config = {**config, "config": {**config["config"], "image_shape": [None, None, channels]}}
    return keras.saving.deserialize_keras_object(config)


def hub_features(
    x,
    backbone: keras.Model,
    preprocessing: dict[str, Any] | None = None,
    name: str = "encoder",
) -> dict[int, Any]:
    """``{stride: features}`` of a keras-hub `FeaturePyramidBackbone` applied to [0, 1] images
    `x` (after ``x * scale + offset`` from `preprocessing`, if given).

    For Python users with a backbone object; registered models use ``encoder="keras_hub"``.
    """
    if not getattr(backbone, "pyramid_outputs", None):
        raise ValueError(
            f"Invalid value for argument `backbone`: {type(backbone).__name__} has no "
            "pyramid_outputs (a keras_hub FeaturePyramidBackbone is needed)"
        )
    for layer in backbone._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            # Global-batch statistics under MirroredStrategy, like every zoo encoder.
            layer.synchronized = True
            layer.momentum = BN_MOMENTUM
    channels = int(backbone.input.shape[-1])
    if int(x.shape[-1]) == 1 and channels == 3:
        x = keras.layers.Concatenate(name=f"{name}_gray_to_rgb")([x, x, x])
    if preprocessing:
        x = ChannelAffine(
            preprocessing["scale"], preprocessing["offset"], name=f"{name}_preprocess"
        )(x)
    pyramid = keras.Model(backbone.inputs, backbone.pyramid_outputs, name=f"{name}_keras_hub")
    outputs = pyramid(x)
    return {2 ** int(key[1:]): value for key, value in outputs.items()}


@register_encoder(
    "keras_hub",
    strides=(4, 8, 16, 32),
    tiny_config={
        "backbone": {
            "class_name": "keras_hub>ResNetBackbone",
            "config": {
                "input_conv_filters": [64],
                "input_conv_kernel_sizes": [3],
                "stackwise_num_filters": [64, 16, 16, 16],
                "stackwise_num_blocks": [1, 1, 1, 1],
                "stackwise_num_strides": [1, 2, 2, 2],
                "block_type": "basic_block",
                "image_shape": [None, None, 3],
            },
        },
        "preprocessing": None,
    },
    output_strides=(32,),
    pretrained=True,
    requires="keras_hub",
    description="A keras-hub backbone (preset name or directory) with pyramid outputs.",
)
def keras_hub_encoder(
    inputs=None,
    *,
    input_shape: Sequence[int | None] = (None, None, 3),
    preset: str | None = None,
    backbone: dict[str, Any] | None = None,
    preprocessing: dict[str, Any] | str | None = PRESET,
    weights: str | None = None,
    name: str = "encoder",
):
    """A keras-hub backbone as an encoder. Returns ``{stride: features}`` or a `keras.Model`.

    Args:
        inputs: image tensor in [0, 1], or None to get a standalone model.
        input_shape: shape of the standalone model's input.
        preset: the architecture's preset (name or directory) when `weights` is None.
        backbone: the backbone's serialized Keras config (written by the model itself so
            that a saved model never reads the preset; give it to build without a preset).
        preprocessing: ``{"scale": ..., "offset": ...}`` for [0, 1] inputs, None, or
            "preset" (the preset's image converter; none without a preset).
        weights: None (random) or a preset name or directory to load the weights of (its
            architecture too, unless `preset` or `backbone` say otherwise).
        name: prefix of the layer names.
    """
    keras_hub = _keras_hub()
    restoring = is_restoring()
    source = weights if weights is not None else preset
    if weights is not None and not isinstance(weights, (str, os.PathLike)):
        raise ValueError(
            "Invalid value for argument `encoder_weights`: expected a keras-hub preset name "
            f"or directory. Received: encoder_weights={weights!r}"
        )
    if backbone is None and source is None:
        raise ValueError(
            "Invalid value for argument `encoder_weights`: encoder 'keras_hub' needs a preset "
            "(encoder_weights='resnet_50_imagenet' or a preset directory, or "
            "encoder_kwargs={'preset': ...} for random weights). Received: encoder_weights=None"
        )

    def body(x):
        channels = int(x.shape[-1])
        # A pretrained RGB backbone sees a gray image as RGB (exact); other counts adapt.
        rgb_gray = weights is not None and channels == 1
        net_channels = 3 if rgb_gray else channels
        load = weights is not None and not restoring
        if backbone is not None:
            net = _from_config(backbone, net_channels)
            if load:
                loaded = _load(keras_hub, str(weights), 3)
                copy_adapting_first_conv(loaded, net, net_channels)
        elif load and net_channels != 3:
            loaded = _load(keras_hub, str(weights), 3)
            net = _from_config(_serialize(loaded, 3), net_channels)
            copy_adapting_first_conv(loaded, net, net_channels)
        else:
            net = _load(keras_hub, str(source), net_channels, weights=load)
        # After the backbone: a preset that does not load is that error, not a warning here.
        pre = preprocessing
        if pre == PRESET:
            pre = None if restoring or source is None else _preset_preprocessing(str(source))
            if pre is None and weights is not None and not restoring:
                warnings.warn(
                    f"keras-hub preset {str(weights)!r} has no image converter: its backbone "
                    "gets the [0, 1] images as they are (pass encoder_kwargs={'preprocessing': "
                    "{'scale': ..., 'offset': ...}} to normalize them)",
                    stacklevel=2,
                )
        record_encoder_kwargs(backbone=_serialize(net, 3), preprocessing=pre)
        if pre and net_channels != 3:  # one value per channel the preprocessing sees
            pre = _cycle(pre, channels)
        return hub_features(x, net, pre, name)

    return run_encoder(inputs, input_shape, name, body)


def _cycle(pre: dict[str, Any], channels: int) -> dict[str, Any]:
    def cycled(v):
        return [v[i % len(v)] for i in range(channels)] if isinstance(v, list) else v

    return {"scale": cycled(pre["scale"]), "offset": cycled(pre["offset"])}


def _load(keras_hub, preset: str, channels: int, weights: bool = True) -> keras.Model:
    try:
        return keras_hub.models.Backbone.from_preset(
            preset, load_weights=weights, image_shape=(None, None, channels), dtype=None
        )
    except Exception as err:  # noqa: BLE001  (keras-hub raises many kinds; one line for users)
        raise _load_failure(preset, err) from None
