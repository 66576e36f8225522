"""`SegmentationModel`: the base of every zoo model, plus the helpers their graphs share.

Subclasses build a functional graph in ``__init__`` (keras-hub style)::

    divisor = self.divisor_for(locals())
    image, x = model_input(input_shape, divisor, pad_to_divisor)
    features = encoder_features(encoder, x, encoder_kwargs)
    logits = ...decoder and head (last layer dtype="float32")...
    outputs = model_output(logits, image, activation, pad_to_divisor)
    super().__init__(inputs=image, outputs=outputs, name=name, **kwargs)
    self._init_config(locals())

`get_config` returns exactly the constructor arguments and `from_config` calls the
constructor, so a `.keras` file stores the recipe (and the weights), never a pickled graph.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import keras

from zoo.checks import check_positive_int, check_rate  # noqa: F401  (for model modules)
from zoo.layers import CheckDivisible, CropToReference, PadToMultiple
from zoo.outputs import to_plain
from zoo.registry import encoder_info, list_encoders
from zoo.restoring import is_restoring, restoring_from_file

ACTIVATIONS = (None, "sigmoid", "softmax")
# Keyword arguments a model passes on to `keras.Model` besides its own (from_config gives them).
BASE_KWARGS = ("name", "trainable", "dtype")


def check_num_classes(num_classes: Any) -> int:
    return check_positive_int("num_classes", num_classes, " (1 for binary segmentation)")


def check_input_shape(input_shape: Any) -> tuple[int | None, int | None, int]:
    shape = tuple(input_shape) if isinstance(input_shape, (list, tuple)) else None
    valid = (
        shape is not None
        and len(shape) == 3
        and all(d is None or (isinstance(d, int) and d > 0) for d in shape[:2])
        and isinstance(shape[2], int)
        and shape[2] > 0
    )
    if not valid:
        raise ValueError(
            "Invalid value for argument `input_shape`: expected (height, width, channels) "
            "with positive ints (height/width may be None). "
            f"Received: input_shape={input_shape!r}"
        )
    return shape


def check_activation(activation: Any) -> str | None:
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"Invalid value for argument `activation`: expected one of {ACTIVATIONS} "
            f"(None = logits). Received: activation={activation!r}"
        )
    return activation


def check_channels(name: str, channels: Any, min_len: int = 1) -> tuple[int, ...]:
    ok = isinstance(channels, (list, tuple)) and len(channels) >= min_len
    ok = ok and all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in channels)
    if not ok:
        raise ValueError(
            f"Invalid value for argument `{name}`: expected a list of at least {min_len} "
            f"positive integers. Received: {name}={channels!r}"
        )
    return tuple(channels)


def model_input(
    input_shape: Sequence[int | None], divisor: int, pad_to_divisor: bool
) -> tuple[Any, Any]:
    """The "image" input and the tensor the encoder sees (padded, size-checked or as is)."""
    shape = check_input_shape(input_shape)
    image = keras.Input(shape=shape, name="image")
    if pad_to_divisor:
        if all(d is not None and d % divisor == 0 for d in shape[:2]):
            return image, image  # nothing to pad: no extra ops
        return image, PadToMultiple(divisor, name="pad_to_divisor")(image)
    for axis, size in zip(("height", "width"), shape[:2]):
        if size is not None and size % divisor:
            raise ValueError(
                f"Input {axis} {size} is not a multiple of {divisor}, which this model needs "
                f"(input_shape={shape}). Resize or crop to a multiple of {divisor}, or pass "
                "pad_to_divisor=True to pad the input and crop the logits back."
            )
    if None in shape[:2]:
        return image, CheckDivisible(divisor, name="check_divisible")(image)
    return image, image


def encoder_features(encoder: str, x: Any, encoder_kwargs: dict | None) -> dict[int, Any]:
    """Run the registered encoder `encoder` on `x`; returns ``{stride: features}``."""
    kwargs = dict(encoder_kwargs or {})
    if not isinstance(encoder, str):
        raise ValueError(
            "Invalid value for argument `encoder`: expected a registered encoder name, one of "
            f"{list_encoders()}. Received: encoder={encoder!r}"
        )
    builder = encoder_info(encoder).obj  # unknown names raise with the choices
    return builder(x, **kwargs)


def model_output(logits: Any, image: Any, activation: str | None, pad_to_divisor: bool) -> Any:
    """Crop padded logits back to the input size and apply the optional activation (float32)."""
    spatial = tuple(image.shape[1:3])
    if pad_to_divisor and (None in spatial or tuple(logits.shape[1:3]) != spatial):
        logits = CropToReference(name="crop_to_input", dtype="float32")([logits, image])
    if activation is not None:
        logits = keras.layers.Activation(activation, name=activation, dtype="float32")(logits)
    return logits


def require_strides(features: dict, strides: Sequence[int], model: str, encoder: str) -> None:
    missing = [s for s in strides if s not in features]
    if missing:
        raise ValueError(
            f"Model `{model}` needs encoder features at strides {list(strides)}, but encoder "
            f"{encoder!r} (with these encoder_kwargs) provides {sorted(features)}."
        )


@keras.saving.register_keras_serializable(package="zoo")
class SegmentationModel(keras.Model):
    """Base class of zoo models: an image -> per-pixel logits functional model.

    Subclasses build their graph in ``__init__``, call ``super().__init__(inputs=...,
    outputs=...)`` and then ``self._init_config(locals())``. Everything else (config round
    trip, `.keras` saving) is shared.

    Attributes:
        divisor: input height and width must be multiples of it (unless padded).
        metadata: facts about how the model was trained, saved in its `.keras` file beside
            the constructor arguments, so every consumer of a saved model (prediction, tiled
            inference, export, evaluation) reads them instead of being told again. Keys (all
            optional): `mode` ("binary" | "multiclass" | "multilabel"), `class_names`,
            `ignore_index`, `image_size` ([height, width] of the training inputs),
            `input_scale` (training resolution / native resolution of the source images),
            `channels`, `threshold` (sigmoid probability cut for binary/multilabel masks).
    """

    divisor: int = 32

    @classmethod
    def arguments(cls, config: dict[str, Any] | None = None) -> dict[str, Any]:
        """The constructor's arguments for `config`: its defaults updated with `config`."""
        params = inspect.signature(cls.__init__).parameters
        args = {
            k: p.default
            for k, p in params.items()
            if k != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        }
        args.update(config or {})
        return args

    @classmethod
    def divisor_for(cls, config: dict[str, Any] | None = None) -> int:
        """Input height and width must be multiples of this for a model built with `config`.

        The one place a model declares its divisor (the registry and the instances read it);
        override it when the divisor depends on the arguments, as `UNet` does.
        """
        return cls.divisor

    def __init__(self, inputs: Any, outputs: Any, name: str | None = None, **kwargs: Any) -> None:
        unknown = sorted(set(kwargs) - set(BASE_KWARGS))
        if unknown:
            params = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
            valid = [p for p in params if p not in ("args", "kwargs")] + ["name", "trainable"]
            raise ValueError(
                f"Unknown argument {unknown[0]}={kwargs[unknown[0]]!r} for model "
                f"{type(self).__name__}; valid arguments: {', '.join(valid)}"
            )
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)
        self.metadata: dict[str, Any] = {}

    def _init_config(self, local_vars: dict[str, Any]) -> None:
        params = inspect.signature(type(self).__init__).parameters
        self._config = {
            k: local_vars[k]
            for k, p in params.items()
            if k != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        }
        self.divisor = type(self).divisor_for(self._config)
        weights = self._config.get("encoder_weights")
        if weights is not None and not is_restoring():
            # Placeholder until the pretrained-weights module lands (issue: pretrained encoders).
            raise ValueError(
                f"Invalid value for argument `encoder_weights`: no pretrained weights source is "
                f"available yet for encoder {self._config.get('encoder')!r}. "
                f"Received: encoder_weights={weights!r}"
            )

    def get_config(self) -> dict[str, Any]:
        config = {"name": self.name, "trainable": self.trainable}
        for key, value in self._config.items():
            config[key] = list(value) if isinstance(value, tuple) else value
        if self.metadata:
            config["metadata"] = to_plain(self.metadata)
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SegmentationModel:
        config = dict(config)
        metadata = config.pop("metadata", None) or {}
        # The saved weights follow: never re-read the config's weight sources (network, files).
        with restoring_from_file():
            model = cls(**config)
        model.metadata = dict(metadata)
        return model


def model_mode(model: Any) -> str:
    """ "binary", "multiclass" or "multilabel": what the model's logits mean.

    Read from `model.metadata["mode"]` (written by the trainer); models saved without it are
    binary with one output channel and multiclass otherwise.
    """
    mode = getattr(model, "metadata", {}).get("mode")
    if mode is not None:
        return str(mode)
    return "binary" if int(model.outputs[0].shape[-1]) == 1 else "multiclass"
