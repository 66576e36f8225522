"""Name -> constructor registries for models and encoders.

`register_model` / `register_encoder` are decorators, `create_*` builds, `list_*` lists with
shell-style patterns; see `losses.registry.Registry` for the behaviour they share.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# The generic registry lives in losses, the lower layer: zoo depends on losses, never the reverse.
from losses.registry import Entry, Registry

MODELS = Registry("model", required=("output_stride", "tiny_config"))
ENCODERS = Registry("encoder", required=("strides", "tiny_config"))


def register_model(
    name: str | None = None, *, description: str = "", **metadata: Any
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a segmentation model class.

    Required metadata: `output_stride` (the coarsest feature stride the decoder uses) and
    `tiny_config` (constructor kwargs for a fast smoke-test model). The entry's `divisor` (input
    sizes must be multiples of it, default arguments) is read from the class's `divisor_for`,
    the one place a model declares it. Optional: `tiny_learning_rate`, the Adam learning rate
    at which the tiny model learns the built-in shapes in the tests' few steps (default 1e-2;
    transformers collapse there and take 1e-3).

    Example:

    ```python
    @zoo.register_model("my_net", output_stride=32, tiny_config={...})
    class MyNet(zoo.models.SegmentationModel):
        ...
    ```
    """
    if "divisor" in metadata:
        raise ValueError(
            "register_model() takes no `divisor`: declare it once in the class "
            "(the `divisor` attribute, or a `divisor_for` classmethod when it depends on the "
            "arguments)"
        )
    register = MODELS.register(name, description=description, **metadata)

    def decorator(cls: Callable[..., Any]) -> Callable[..., Any]:
        out = register(cls)
        divisor_for = getattr(cls, "divisor_for", None)
        if divisor_for is not None:
            MODELS.get(name or cls.__name__.lower()).metadata["divisor"] = int(divisor_for())
        return out

    return decorator


def create_model(name: str, **kwargs: Any) -> Any:
    """Build the model registered under `name`, e.g. ``create_model("unet", num_classes=1)``."""
    return MODELS.create(name, **kwargs)


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style pattern (``list_models("unet*")``)."""
    return MODELS.list(pattern)


def model_info(name: str) -> Entry:
    """Registry entry (constructor, description and metadata) of model `name`."""
    return MODELS.get(name)


def register_encoder(
    name: str | None = None, *, description: str = "", **metadata: Any
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register an encoder builder. Required metadata: `strides` and `tiny_config`."""
    return ENCODERS.register(name, description=description, **metadata)


def create_encoder(name: str, **kwargs: Any) -> Any:
    """Build the encoder registered under `name`."""
    return ENCODERS.create(name, **kwargs)


def list_encoders(pattern: str = "*") -> list[str]:
    """Registered encoder names matching a shell-style pattern (``list_encoders("resnet*")``)."""
    return ENCODERS.list(pattern)


def encoder_info(name: str) -> Entry:
    """Registry entry (builder, description and metadata) of encoder `name`."""
    return ENCODERS.get(name)
