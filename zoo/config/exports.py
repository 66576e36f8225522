"""`trainer.export`: the deployment artifacts a run writes next to its model.keras.

Each entry is a format, optionally with a quantization: `saved_model`, `onnx`, `litert`
(alias `tflite`), `saved_model:float16`, `litert:float16`, `litert:int8`, `litert:int8-full`.
`export_requests` checks them when the config is parsed, before anything is built: an unknown
format, a quantization the format does not take or a converter that is not installed is one
line naming the entry. `zoo.training.artifacts` writes them at the end of the run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from zoo.errors import ConfigError, MissingDependencyError

KEY = "trainer.export"


@dataclass(frozen=True)
class ExportRequest:
    """One artifact: a `zoo.export` format and its quantization (None: float32)."""

    format: str
    quantize: str | None = None

    @property
    def label(self) -> str:
        """The entry as written in the config (`litert:int8`)."""
        return self.format + (f":{self.quantize}" if self.quantize else "")


def _entries() -> list[str]:
    from zoo.export import formats

    return [
        f if q is None else f"{f}:{q}" for f in formats.FORMATS for q in formats.QUANTIZATIONS[f]
    ]


def export_requests(value: Any) -> tuple[ExportRequest, ...]:
    """The artifacts `trainer.export` asks for, checked (duplicates dropped, order kept).

    Args:
        value: a list of entries (or one entry as a string); None or [] for none.

    Raises:
        ConfigError: an entry that is not a string, an unknown format, a quantization the
            format does not take (each names the entry and the valid ones).
        MissingDependencyError: a format whose converter or runtime is not installed.

    Example:
        >>> [r.label for r in export_requests(["saved_model", "tflite:int8"])]
        ['saved_model', 'litert:int8']
    """
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, Sequence):
        raise ConfigError(
            f"Invalid {KEY}={value!r}: expected a list of formats, e.g. {KEY}=[saved_model,onnx]"
        )
    from zoo.export import formats
    from zoo.export.core import ALIASES

    requests: list[ExportRequest] = []
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(
                f"Invalid {KEY} entry {item!r}: expected a format name; valid entries: "
                f"{', '.join(_entries())}"
            )
        name, _, quantize = item.partition(":")
        fmt = ALIASES.get(name.strip(), name.strip())
        if fmt not in formats.FORMATS:
            raise ConfigError(
                f"Invalid {KEY} entry {item!r}: unknown format {name!r}; valid entries: "
                f"{', '.join(_entries())}"
            )
        q = quantize.strip() or None
        q = None if q in ("none", "float32") else q
        if q not in formats.QUANTIZATIONS[fmt]:
            takes = [f"{fmt}:{x}" for x in formats.QUANTIZATIONS[fmt] if x is not None]
            what = f"takes {', '.join(takes)}" if takes else "takes no quantization"
            raise ConfigError(
                f"Invalid {KEY} entry {item!r}: {fmt} {what} (besides float32: {fmt})"
            )
        request = ExportRequest(fmt, q)
        if request not in requests:
            requests.append(request)
    for request in requests:
        missing = formats.missing_modules(request.format)
        if missing:
            raise MissingDependencyError(
                f"{KEY} entry {request.label!r} needs {', '.join(missing)}, which is not "
                "installed: pip install 'segzoo[export]' (or drop the entry)"
            )
    return tuple(requests)
