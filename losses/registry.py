"""Name -> constructor registries: the generic `Registry`, and the loss-term registry `LOSSES`.

A decorator registers, `create(name, **kw)` builds, `list(pattern)` lists with shell-style
patterns. Registering a name twice raises (naming the first registration) and an unknown name
raises a `ValueError` that lists the choices and suggests the closest one. `zoo.registry` builds
the model and encoder registries on the same class (losses is the lower layer: zoo imports
losses, never the reverse).
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import keras


def _natural_key(name: str) -> list:
    return [
        (0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name)
    ]


def _similarity(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, str(a), b).ratio()


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
        choices = self.list()
        close = difflib.get_close_matches(str(name), choices, n=3, cutoff=0.5)
        # Every name as close as the closest ('resnet35': 'resnet34' or 'resnet50'), or the
        # names it begins ('resnext50': 'resnext50_32x4d').
        best = [c for c in close if _similarity(name, c) == _similarity(name, close[0])]
        best = [c for c in choices if c.startswith(str(name))][:3] or best
        names = [repr(c) for c in sorted(best)]
        either = " or ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
        hint = f" Did you mean {either}?" if best else ""
        raise ValueError(
            f"Unknown {self.kind} {name!r}.{hint} Available {self.kind}s: {', '.join(choices)}"
        )

    def create(self, name: str, **kwargs: Any) -> Any:
        """Build the object registered under `name` with `kwargs`."""
        return self.get(name).obj(**kwargs)

    def list(self, pattern: str = "*") -> list[str]:
        """Names matching the shell-style `pattern` (e.g. ``"resnet*"``), in natural order
        (numbers by value, as timm lists: resnet18, resnet34, resnet50, resnet101)."""
        names = (n for n in self._entries if fnmatch.fnmatchcase(n, pattern))
        return sorted(names, key=_natural_key)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)


LOSSES = Registry("loss")


def register_loss(
    name: str | None = None, *, description: str = "", **metadata: Any
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a loss-layer class under `name` (used in specs such as ``"wbce+dice"``).

    The class is built as ``cls(mode=..., ignore_index=..., loss_weight=..., **options)``.
    Metadata `loss_class` (its `keras.losses.Loss` form, for `get_loss`) and `modes` (the modes
    it supports, for config checks) are expected; `losses.base.register_term` gives both.
    """
    return LOSSES.register(name, description=description, **metadata)


def get(term: str, /, **options: Any) -> keras.layers.Layer:
    """A loss layer of `term` (e.g. ``get("dice", mode="multiclass", smooth=0.0)``).

    `options` are the layer's arguments (mode, ignore_index, loss_weight, name, term options).
    """
    return LOSSES.get(term).obj(**options)


def get_loss(term: str, /, **options: Any) -> keras.losses.Loss:
    """The `keras.losses.Loss` of `term`, for ``compile(loss=...)``."""
    return LOSSES.get(term).loss_class(**options)


def list_losses(pattern: str = "*") -> list[str]:
    """Registered loss-term names matching a shell-style pattern."""
    return LOSSES.list(pattern)
