"""`SegmentationModel`: the base of every zoo model, plus the helpers their graphs share.

Subclasses build a functional graph in ``__init__`` (keras-hub style)::

    divisor = self.divisor_for(locals())
    image, x = model_input(input_shape, divisor, pad_to_divisor)
    features = encoder_features(encoder, x, encoder_kwargs, encoder_weights)
    logits = ...decoder and head (last layer dtype="float32")...
    outputs = model_output(logits, image, activation, pad_to_divisor)
    super().__init__(inputs=image, outputs=outputs, name=name, **kwargs)
    self._init_config(locals())

`get_config` returns exactly the constructor arguments and `from_config` calls the
constructor, so a `.keras` file stores the recipe (and the weights), never a pickled graph.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Sequence
from typing import Any

import keras

from zoo.build_context import restoring_from_file
from zoo.checks import check_positive_int, check_rate  # noqa: F401  (for model modules)
from zoo.encoders._common import recording_encoder_kwargs, stop_recording
from zoo.layers import CheckDivisible, CropToReference, PadToMultiple
from zoo.optimizers import mark_encoder_variables
from zoo.outputs import to_plain
from zoo.registry import encoder_info, list_encoders

ACTIVATIONS = (None, "sigmoid", "softmax")
# Keyword arguments a model passes on to `keras.Model` besides its own (from_config gives them).
BASE_KWARGS = ("name", "trainable", "dtype")
# What `encoder_features` did for the model being built on this thread (checked by
# `_init_config`: a model that takes `encoder_weights` must hand them to the encoder).
_BUILD = threading.local()


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


def encoder_features(
    encoder: str, x: Any, encoder_kwargs: dict | None, encoder_weights: Any = None
) -> dict[int, Any]:
    """Run the registered encoder `encoder` on `x`; returns ``{stride: features}``.

    `encoder_weights` (the model's argument: None, "imagenet", a file path or a named source,
    see docs/models.md) becomes the builder's `weights`; the adapters' older
    ``encoder_kwargs={"weights": ...}`` stays accepted as an alias.
    """
    kwargs = dict(encoder_kwargs or {})
    if not isinstance(encoder, str):
        raise ValueError(
            "Invalid value for argument `encoder`: expected a registered encoder name, one of "
            f"{list_encoders()}. Received: encoder={encoder!r}"
        )
    builder = encoder_info(encoder).obj  # unknown names raise with the choices
    if encoder_weights is not None:
        alias = kwargs.get("weights")
        if alias is not None and alias != encoder_weights:
            raise ValueError(
                "Invalid value for argument `encoder_weights`: it disagrees with "
                f"encoder_kwargs['weights']={alias!r} (an alias); give one of them. "
                f"Received: encoder_weights={encoder_weights!r}"
            )
        if "weights" not in inspect.signature(builder).parameters:
            raise ValueError(
                f"Invalid value for argument `encoder_weights`: encoder {encoder!r} takes no "
                f"pretrained weights. Received: encoder_weights={encoder_weights!r}"
            )
        kwargs["weights"] = encoder_weights
    _BUILD.encoder_weights = encoder_weights
    recorded = recording_encoder_kwargs()
    try:
        features = builder(x, **kwargs)
    finally:
        stop_recording()
    _BUILD.encoder_kwargs = recorded
    from zoo.port.mapping import layers_between

    _BUILD.encoder_layers = layers_between(x, features)
    return features


def model_output(logits: Any, image: Any, activation: str | None, pad_to_divisor: bool) -> Any:
    """Crop padded logits back to the input size and apply the optional activation (float32)."""
    spatial = tuple(image.shape[1:3])
    if pad_to_divisor and (None in spatial or tuple(logits.shape[1:3]) != spatial):
        logits = CropToReference(name="crop_to_input", dtype="float32")([logits, image])
    if activation is not None:
        logits = keras.layers.Activation(activation, name=activation, dtype="float32")(logits)
    return logits


def check_deep_supervision(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(
            "Invalid value for argument `deep_supervision`: expected True or False. "
            f"Received: deep_supervision={value!r}"
        )
    return value


def aux_head(x: Any, num_classes: int, index: int, kernel_size: int = 1) -> Any:
    """Auxiliary logits `head_aux_<index>` of a deep-supervised model, at `x`'s resolution.

    One conv with bias to `num_classes` channels, float32 like the main head (the loss and
    its target downsampling run in float32 under mixed precision).
    """
    return keras.layers.Conv2D(
        num_classes, kernel_size, padding="same", name=f"head_aux_{index}", dtype="float32"
    )(x)


def with_aux(outputs: Any, aux: Sequence[Any], deep_supervision: bool) -> Any:
    """The model's outputs: the logits alone, or ``[logits, *aux]`` under deep supervision
    (full resolution first, then the auxiliary logits from the finest to the coarsest)."""
    return [outputs, *aux] if deep_supervision else outputs


def deep_supervision_models() -> list[str]:
    """Registered models that take `deep_supervision=True`."""
    from zoo.registry import list_models, model_info

    return [
        n for n in list_models() if getattr(model_info(n).obj, "supports_deep_supervision", False)
    ]


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
        supports_deep_supervision: the constructor takes `deep_supervision` (auxiliary
            logits as extra outputs, see docs/training.md); `deep_supervision_models()`.
        metadata: facts about how the model was trained, saved in its `.keras` file beside
            the constructor arguments, so every consumer of a saved model (prediction, tiled
            inference, export, evaluation) reads them instead of being told again. Keys (all
            optional): `mode` ("binary" | "multiclass" | "multilabel"), `class_names`,
            `ignore_index`, `image_size` ([height, width] of the training inputs),
            `input_scale` (training resolution / native resolution of the source images),
            `channels`, `threshold` (sigmoid probability cut for binary/multilabel masks).
    """

    divisor: int = 32
    # True for models whose constructor takes `deep_supervision` (auxiliary logits).
    supports_deep_supervision: bool = False

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

    @classmethod
    def num_outputs(cls, config: dict[str, Any] | None = None) -> int:
        """How many outputs a model built with `config` has: 1, or under deep supervision the
        logits plus one per auxiliary head (`aux_levels`)."""
        args = cls.arguments(config)
        return 1 + (cls.aux_levels(args) if args.get("deep_supervision") else 0)

    @classmethod
    def aux_levels(cls, args: dict[str, Any]) -> int:
        """The number of auxiliary heads under deep supervision (models that support it)."""
        return 0

    def __init__(self, inputs: Any, outputs: Any, name: str | None = None, **kwargs: Any) -> None:
        if kwargs.get("deep_supervision", True) is False:
            kwargs.pop("deep_supervision")  # off is what a model without aux outputs does
        unknown = sorted(set(kwargs) - set(BASE_KWARGS))
        if unknown == ["deep_supervision"]:
            raise ValueError(
                f"Invalid value for argument `deep_supervision`: model {type(self).__name__} has "
                "no auxiliary outputs; models that support it: "
                f"{', '.join(deep_supervision_models())}. "
                f"Received: deep_supervision={kwargs['deep_supervision']!r}"
            )
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
        handed = getattr(_BUILD, "encoder_weights", None)
        resolved = getattr(_BUILD, "encoder_kwargs", None)
        encoder = {id(layer) for layer in getattr(_BUILD, "encoder_layers", None) or []}
        # Names, not layers: a list of layers set on a model would be tracked (and saved).
        self._encoder_layer_names = tuple(
            layer.name for layer in self.layers if id(layer) in encoder
        )
        _BUILD.encoder_weights = _BUILD.encoder_kwargs = _BUILD.encoder_layers = None
        mark_encoder_variables(v for layer in self.encoder_layers for v in layer.weights)
        if resolved and "encoder_kwargs" in self._config:
            # What the encoder read from its source (e.g. a keras-hub preset's architecture)
            # is saved with the model, so that loading it never reads the source again.
            self._config["encoder_kwargs"] = {**(self._config["encoder_kwargs"] or {}), **resolved}
        if weights is not None and handed != weights:
            raise ValueError(
                f"Invalid value for argument `encoder_weights`: model {type(self).__name__} "
                "does not pass them to its encoder (its graph must call "
                "encoder_features(encoder, x, encoder_kwargs, encoder_weights)). "
                f"Received: encoder_weights={weights!r}"
            )

    @property
    def encoder_layers(self) -> list[Any]:
        """The layers the encoder added (preprocessing included), in graph order."""
        return [self.get_layer(name) for name in getattr(self, "_encoder_layer_names", ())]

    @property
    def encoder_frozen(self) -> bool:
        return bool(getattr(self, "_encoder_frozen", False))

    def freeze_encoder(self, frozen: bool = True) -> None:
        """Freeze (or unfreeze) the encoder: its weights stop training and its batch norms
        run in inference mode (their statistics stay), as in Keras' fine-tuning guide.

        Compile the model (again) afterwards: Keras collects the trainable variables when
        it builds the training step. The state is saved with the model (``.keras``).

        Args:
            frozen: True to freeze, False to train the encoder again.
        """
        if not isinstance(frozen, bool):
            raise ValueError(
                f"Invalid value for argument `frozen`: expected True or False. "
                f"Received: frozen={frozen!r}"
            )
        for layer in self.encoder_layers:
            layer.trainable = not frozen
        self._encoder_frozen = frozen

    def get_config(self) -> dict[str, Any]:
        config = {"name": self.name, "trainable": self.trainable}
        for key, value in self._config.items():
            config[key] = list(value) if isinstance(value, tuple) else value
        if self.metadata:
            config["metadata"] = to_plain(self.metadata)
        if self.encoder_frozen:
            config["encoder_frozen"] = True
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SegmentationModel:
        config = dict(config)
        metadata = config.pop("metadata", None) or {}
        frozen = bool(config.pop("encoder_frozen", False))
        # The saved weights follow: never re-read the config's weight sources (network, files).
        with restoring_from_file():
            model = cls(**config)
        model.metadata = dict(metadata)
        if frozen:
            model.freeze_encoder()
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
