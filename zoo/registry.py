"""Name -> constructor registries for models, encoders (and, in `losses`, loss terms).

A decorator registers, `create(name, **kw)` builds, `list(pattern)` lists with shell-style
patterns. Registering a name twice raises (naming the first registration) and an unknown name
raises a `ValueError` that lists the choices and suggests the closest one.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Entry:
    """One registered constructor and the metadata users and tests need."""

    name: str
    obj: Callable[..., Any]
    description: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    def __getattr__(self, key: str) -> Any:
        # Metadata reads like attributes: `info("unet").divisor`.
        try:
            return self.__dict__["metadata"][key]
        except KeyError:
            raise AttributeError(key) from None


def _source_of(obj: Any) -> str:
    module = getattr(obj, "__module__", "?")
    qualname = getattr(obj, "__qualname__", repr(obj))
    try:
        line = inspect.getsourcelines(obj)[1]
        return f"{module}.{qualname} ({inspect.getsourcefile(obj)}:{line})"
    except (OSError, TypeError):
        return f"{module}.{qualname}"


class Registry:
    """A named collection of constructors.

    Args:
        kind: what is registered, singular ("model", "encoder", "loss"); used in messages.
        required: metadata keys every registration must give.
    """

    def __init__(self, kind: str, required: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.required = tuple(required)
        self._entries: dict[str, Entry] = {}

    def register(
        self, name: str | None = None, *, description: str = "", **metadata: Any
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator registering a class or function under `name` (default: its lower-case name)."""

        def decorator(obj: Callable[..., Any]) -> Callable[..., Any]:
            key = name or obj.__name__.lower()
            if not isinstance(key, str) or not key:
                raise ValueError(
                    f"A {self.kind} name must be a non-empty string. Received: {key!r}"
                )
            if key in self._entries:
                raise ValueError(
                    f"{self.kind.capitalize()} '{key}' is already registered "
                    f"(first registered by {self._entries[key].source}); pick another name."
                )
            missing = [k for k in self.required if k not in metadata]
            if missing:
                raise ValueError(
                    f"Registering {self.kind} '{key}' needs metadata {missing}. "
                    f"Required keys: {list(self.required)}"
                )
            doc = description or (inspect.getdoc(obj) or "").strip().splitlines()[:1]
            if isinstance(doc, list):
                doc = doc[0] if doc else ""
            self._entries[key] = Entry(key, obj, doc, dict(metadata), _source_of(obj))
            return obj

        return decorator

    def get(self, name: str) -> Entry:
        """The entry registered under `name`; unknown names raise a `ValueError` with choices."""
        if name in self._entries:
            return self._entries[name]
        choices = sorted(self._entries)
        close = difflib.get_close_matches(str(name), choices, n=1, cutoff=0.5)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ValueError(
            f"Unknown {self.kind} {name!r}.{hint} Available {self.kind}s: {', '.join(choices)}"
        )

    def create(self, name: str, **kwargs: Any) -> Any:
        """Build the object registered under `name` with `kwargs`."""
        return self.get(name).obj(**kwargs)

    def list(self, pattern: str = "*") -> list[str]:
        """Sorted names matching the shell-style `pattern` (e.g. ``"resnet*"``)."""
        return sorted(n for n in self._entries if fnmatch.fnmatchcase(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)


MODELS = Registry("model", required=("output_stride", "tiny_config"))
ENCODERS = Registry("encoder", required=("strides", "tiny_config"))


def register_model(
    name: str | None = None, *, description: str = "", **metadata: Any
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a segmentation model class.

    Required metadata: `output_stride` (the coarsest feature stride the decoder uses) and
    `tiny_config` (constructor kwargs for a fast smoke-test model). The entry's `divisor` (input
    sizes must be multiples of it, default arguments) is read from the class's `divisor_for`,
    the one place a model declares it.

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
