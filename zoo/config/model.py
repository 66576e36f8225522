"""The `model` group's schema, generated from each registered model's constructor signature.

Keys are the constructor's arguments (except `num_classes` and `input_shape`, which come from the
data config) and values must fit their annotations, so `model.decoder_channels=16` or
`model.dropout=high` fail before any data is read, listing the valid keys and types.

Two more keys belong to every model but are not constructor arguments: the app applies them to
the built model (`APP_KEYS`; defaults in conf/config.yaml, so every model, present and future,
has them without listing them in its own yaml):

- `freeze_encoder` (bool): the encoder's weights stay as built (pretrained or `init_from`) and
  its batch norms run in inference mode (`SegmentationModel.freeze_encoder`);
- `init_from` (a `.keras` file or null): the weights of a saved model of the same architecture
  (a run's `model.keras` or `checkpoints/best.keras`) start training, e.g. the all-layers
  stage of fine-tuning after a frozen-encoder run.
"""

from __future__ import annotations

import contextlib
import inspect
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.config.checks import describe, matches
from zoo.errors import ConfigError, MissingFileError, ModelFileError

# Filled in from the data config, not the model group.
FROM_DATA = ("num_classes", "input_shape")
# Keys of the model group that the app applies to the built model (not constructor arguments).
APP_KEYS: dict[str, Any] = {"freeze_encoder": bool, "init_from": str | None}


@dataclass(frozen=True)
class ModelSpec:
    """A registered model, its constructor arguments (`num_classes`, `input_shape` included)
    and what the app does to it once built (`freeze_encoder`, `init_from`)."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    freeze_encoder: bool = False
    init_from: str | None = None

    @property
    def divisor(self) -> int:
        """Input sizes must be multiples of it (the class declares it; see `divisor_for`)."""
        import zoo

        return int(zoo.model_info(self.name).obj.divisor_for(self.kwargs))

    def initial_weights(self) -> dict[str, Any] | None:
        """What `init_from` holds: {"config": its constructor arguments, "weights": {variable
        path: array}, "about": a description for messages}; None without `init_from`.

        Read outside the distribution strategy's scope (the saved model is a throwaway).

        Raises:
            MissingFileError, ModelFileError: the file is missing, damaged or not a zoo model.
        """
        if self.init_from is None:
            return None
        import keras

        from zoo.models.base import SegmentationModel
        from zoo.saving import load_model

        saved = load_model(self.init_from)
        if not isinstance(saved, SegmentationModel):
            raise ModelFileError(
                f"model.init_from={self.init_from} holds a {type(saved).__name__}, not a zoo "
                "segmentation model; name a model.keras written by train.py"
            )
        return {
            "registered": _registered_name(saved),
            "config": dict(saved._config),
            "weights": {v.path: keras.ops.convert_to_numpy(v) for v in saved.weights},
            "about": _describe(saved),
        }

    def build(self, initial: dict[str, Any] | None = None) -> Any:
        """The inference model (call inside the strategy scope), started from `initial`
        (`initial_weights()`) and with its encoder frozen when `freeze_encoder` is set.

        With `initial` the model must be the one saved there (the same model.* keys, classes
        and channels); its encoder weight source (`encoder_weights`) is not read again.

        Raises:
            ConfigError: a value the model's constructor refuses (its message, one line), or
                an `init_from` model built with other arguments (names the first).
        """
        import zoo
        from zoo.build_context import restoring_from_file

        kwargs = dict(self.kwargs)
        if initial is not None:
            self._check_same_model(initial)
            # What the encoder resolved when the saved model was built (a keras-hub preset's
            # architecture): the same graph, without reading the source again.
            kwargs["encoder_kwargs"] = initial["config"].get("encoder_kwargs")
        try:
            with restoring_from_file() if initial is not None else contextlib.nullcontext():
                model = zoo.create_model(self.name, **kwargs)
        except ValueError as err:  # the constructors validate their arguments first
            raise ConfigError(f"model={self.name}: {err}") from err
        if initial is not None:
            self._assign(model, initial)
        if self.freeze_encoder:
            # Before compile: Keras collects the trainable variables when it builds the step.
            model.freeze_encoder()
        return model

    def _misfit(self, about: str, detail: str) -> ConfigError:
        return ConfigError(
            f"model.init_from={self.init_from} holds {about}, which this run's model cannot "
            f"start from: {detail}; give the same model.* keys, data.num_classes and "
            "data.channels as its run (config.yaml there)"
        )

    def _check_same_model(self, initial: dict[str, Any]) -> None:
        """The run's model arguments must be those of the saved model (a graph with the same
        variables can still compute another function: normalization, padding)."""
        import zoo

        about, saved = initial["about"], initial["config"]
        if initial["registered"] != self.name:
            raise self._misfit(about, f"this run builds model={self.name}")
        # Every constructor argument, the ones left at their defaults too.
        for key, value in zoo.model_info(self.name).obj.arguments(self.kwargs).items():
            old = saved.get(key)
            if key == "deep_supervision":
                continue  # training-only heads: the saved model is the same network without
            if key == "input_shape":
                if _plain(old)[-1] != value[-1]:
                    raise self._misfit(about, f"this run has data.channels={value[-1]}")
            elif key == "num_classes":
                if old != value:
                    raise self._misfit(about, f"this run has data.num_classes={value}")
            elif key == "encoder_kwargs":
                given = dict(value or {})  # the keys a user gave; the saved ones are resolved
                differ = [k for k in given if _plain(given[k]) != _plain((old or {}).get(k))]
                if differ:
                    k = differ[0]
                    raise self._misfit(
                        about,
                        f"it was built with encoder_kwargs.{k}={(old or {}).get(k)!r}, this run "
                        f"has {given[k]!r}",
                    )
            elif _plain(old) != _plain(value):
                raise self._misfit(
                    about, f"it was built with model.{key}={old!r}, this run has {value!r}"
                )

    def _assign(self, model: Any, initial: dict[str, Any]) -> None:
        weights, about = initial["weights"], initial["about"]
        # Auxiliary heads (deep supervision) train only: a saved model has none; they start new.
        own = {v.path: v for v in model.weights if not v.path.startswith("head_aux_")}
        for path, variable in own.items():
            if path not in weights:
                raise self._misfit(about, f"it has no variable {path}")
            if tuple(weights[path].shape) != tuple(variable.shape):
                raise self._misfit(
                    about,
                    f"variable {path} has shape {tuple(weights[path].shape)}, this run's "
                    f"{tuple(variable.shape)}",
                )
        extra = sorted(set(weights) - set(own))
        if extra:
            raise self._misfit(about, f"its variable {extra[0]} has no counterpart")
        for path, variable in own.items():
            variable.assign(weights[path])


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively (configs round-trip tuples as lists)."""
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _registered_name(model: Any) -> str | None:
    import zoo

    for name in zoo.list_models():
        if type(model) is zoo.model_info(name).obj:
            return name
    return None


def _describe(model: Any) -> str:
    """ "a unet (encoder resnet34, 2 classes, 3 channels)" for messages."""
    config = getattr(model, "_config", None) or {}
    classes = int(model.outputs[0].shape[-1])
    channels = model.inputs[0].shape[-1]
    return (
        f"a {_registered_name(model) or type(model).__name__} (encoder {config.get('encoder')}, "
        f"{classes} class{'es' if classes != 1 else ''}, {channels} "
        f"channel{'s' if channels != 1 else ''})"
    )


def schema(name: str) -> dict[str, Any]:
    """{key: annotation} of the `model` group for registered model `name`."""
    import zoo

    try:
        cls = zoo.model_info(name).obj
    except ValueError as err:
        raise ConfigError(f"model.name: {err}") from None
    hints = typing.get_type_hints(cls.__init__)
    params = inspect.signature(cls.__init__).parameters
    return {
        k: hints.get(k, Any)
        for k, p in params.items()
        if k != "self" and k not in FROM_DATA and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    }


def model_spec(values: dict[str, Any], num_classes: int, channels: int = 3) -> ModelSpec:
    """Check the `model` group's values against the model's schema; fill in the data's part.

    Raises:
        ConfigError: an unknown key, a value of the wrong type, an unknown encoder.
        MissingFileError: `init_from` names no file.
    """
    values = dict(values)
    name = values.pop("name", None)
    if name is None:
        raise ConfigError("The model config has no `name` key; e.g. model=unet")
    keys = schema(name)
    app = {key: values.pop(key) for key in list(values) if key in APP_KEYS}
    valid = ", ".join(f"{k} ({describe(h)})" for k, h in {**keys, **APP_KEYS}.items())
    for key, value in values.items():
        if key == "deep_supervision" and key not in keys:
            from zoo.models.base import deep_supervision_models

            raise ConfigError(
                f"Invalid model.deep_supervision={value!r}: model '{name}' has no auxiliary "
                f"outputs; models that support it: {', '.join(deep_supervision_models())}"
            )
        if key not in keys:
            raise ConfigError(
                f"Unknown key model.{key}={value!r} for model '{name}'; valid keys: {valid}"
            )
        if not matches(value, keys[key]):
            raise ConfigError(
                f"Invalid model.{key}={value!r} for model '{name}': expected {describe(keys[key])}"
            )
    for key, value in app.items():
        if not matches(value, APP_KEYS[key]):
            raise ConfigError(f"Invalid model.{key}={value!r}: expected {describe(APP_KEYS[key])}")
    init_from = app.get("init_from")
    if init_from is not None:
        init_from = str(Path(init_from).expanduser())
        if Path(init_from).suffix != ".keras":
            raise ConfigError(
                f"Invalid model.init_from={app['init_from']!r}: expected a .keras model (a "
                "run's model.keras or checkpoints/best.keras)"
            )
        if not Path(init_from).is_file():
            raise MissingFileError(f"model.init_from={app['init_from']}: no such file")
    encoder = values.get("encoder")
    if isinstance(encoder, str):
        import zoo

        try:
            zoo.encoder_info(encoder)
        except ValueError as err:
            raise ConfigError(f"model.encoder: {err}") from None
    values.update(num_classes=int(num_classes), input_shape=(None, None, int(channels)))
    return ModelSpec(name, values, bool(app.get("freeze_encoder", False)), init_from)
