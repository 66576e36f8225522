"""The `model` group's schema, generated from each registered model's constructor signature.

Keys are the constructor's arguments (except `num_classes` and `input_shape`, which come from the
data config) and values must fit their annotations, so `model.decoder_channels=16` or
`model.dropout=high` fail before any data is read, listing the valid keys and types.
"""

from __future__ import annotations

import inspect
import typing
from dataclasses import dataclass, field
from typing import Any

from zoo.config.checks import describe, matches
from zoo.errors import ConfigError

# Filled in from the data config, not the model group.
FROM_DATA = ("num_classes", "input_shape")


@dataclass(frozen=True)
class ModelSpec:
    """A registered model and its constructor arguments (`num_classes`, `input_shape` included)."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def divisor(self) -> int:
        """Input sizes must be multiples of it (the class declares it; see `divisor_for`)."""
        import zoo

        return int(zoo.model_info(self.name).obj.divisor_for(self.kwargs))

    def build(self) -> Any:
        """The inference model (call inside the strategy scope).

        Raises:
            ConfigError: a value the model's constructor refuses (its message, one line).
        """
        import zoo

        try:
            return zoo.create_model(self.name, **self.kwargs)
        except ValueError as err:  # the constructors validate their arguments first
            raise ConfigError(f"model={self.name}: {err}") from err


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
    """Check the `model` group's values against the model's schema; fill in the data's part."""
    values = dict(values)
    name = values.pop("name", None)
    if name is None:
        raise ConfigError("The model config has no `name` key; e.g. model=unet")
    keys = schema(name)
    valid = ", ".join(f"{k} ({describe(h)})" for k, h in keys.items())
    for key, value in values.items():
        if key not in keys:
            raise ConfigError(
                f"Unknown key model.{key}={value!r} for model '{name}'; valid keys: {valid}"
            )
        if not matches(value, keys[key]):
            raise ConfigError(
                f"Invalid model.{key}={value!r} for model '{name}': expected {describe(keys[key])}"
            )
    encoder = values.get("encoder")
    if isinstance(encoder, str):
        import zoo

        try:
            zoo.encoder_info(encoder)
        except ValueError as err:
            raise ConfigError(f"model.encoder: {err}") from None
    values.update(num_classes=int(num_classes), input_shape=(None, None, int(channels)))
    return ModelSpec(name, values)
