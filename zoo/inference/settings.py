"""The prediction options shared by `python -m zoo.predict`, `train.py mode=predict|evaluate`
and the final full-resolution evaluation of a training run, checked by one function.

`check_options` takes the values as the user wrote them (flags, config values or Python
arguments) and returns `PredictOptions`, normalized; the first bad value raises one
`ConfigError` line naming it the way the user spelled it (``--tile``, ``predict.tile``).
Checking is idempotent: already-normalized options pass unchanged.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from zoo.errors import ConfigError
from zoo.inference.tiling import BLENDS
from zoo.inference.tta import TTA_MODES

PROBABILITY_FORMATS = ("npy", "png")
TILE_WORDS = ("auto", "whole")


@dataclass(frozen=True)
class PredictOptions:
    """Normalized prediction options.

    Attributes:
        tile: "auto" (whole up to twice the training size per side, else tiles of the
            training size), None (every image whole) or (height, width).
        overlap, blend, batch_size, tta: `zoo.inference.TiledPredictor` settings (tta None:
            the model's own, `zoo.inference.tta.model_tta`).
        threshold: probability cut for binary/multilabel masks; None: the model's metadata
            "threshold", else 0.5.
        probabilities: also write probability maps: None, "npy" (float16 (H, W, K)) or
            "png" (16-bit, one file per channel).
        overlays: also write image + mask overlays (RGB PNG).
        skip_corrupt: skip unreadable images (named in the log) instead of stopping.
    """

    tile: tuple[int, int] | str | None = "auto"
    overlap: float = 0.5
    blend: str = "gaussian"
    batch_size: int = 8
    tta: str | None = None
    threshold: float | None = None
    probabilities: str | None = None
    overlays: bool = False
    skip_corrupt: bool = False

    def predictor_kwargs(self) -> dict[str, Any]:
        """The `TiledPredictor` arguments among the options."""
        return {k: getattr(self, k) for k in ("tile", "overlap", "blend", "batch_size", "tta")}

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if isinstance(self.tile, tuple):
            out["tile"] = list(self.tile)
        return out


OPTION_NAMES = tuple(f.name for f in fields(PredictOptions))


def _tile(value: Any, bad: Callable[[str], ConfigError]) -> tuple[int, int] | str | None:
    expected = (
        "'auto', 'whole', a positive integer or [height, width] (multiples of the model's divisor)"
    )
    if value is None or (isinstance(value, str) and value.strip().lower() in ("whole", "none")):
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "auto":
            return "auto"
        match = re.fullmatch(r"(\d+)(?:\s*[x,]\s*(\d+))?", text)
        if not match:
            raise bad(expected)
        value = [int(match[1]), int(match[2] or match[1])]
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value, value]
    if (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        return int(value[0]), int(value[1])
    raise bad(expected)


def number(value: Any) -> Any:
    """Numbers written as text (command-line flags) as numbers; anything else unchanged."""
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            try:
                return float(value)
            except ValueError:
                return value
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_options(
    values: Mapping[str, Any], name: Callable[[str], str] = lambda key: key
) -> PredictOptions:
    """Check and normalize prediction options (missing keys take the defaults).

    Args:
        values: option values as given (`PredictOptions` fields; numbers may be text).
        name: how the user spells an option in messages, e.g. ``lambda k: f"predict.{k}"``.

    Raises:
        ConfigError: an unknown option or a bad value, in one line.

    Example:
        >>> check_options({"tile": "512", "tta": "flip"}).tile
        (512, 512)
    """
    unknown = sorted(set(values) - set(OPTION_NAMES))
    if unknown:
        raise ConfigError(f"Unknown option {name(unknown[0])}; valid: {', '.join(OPTION_NAMES)}")
    v = {**asdict(PredictOptions()), **values}

    def bad(key: str) -> Callable[[str], ConfigError]:
        return lambda expected: ConfigError(
            f"Invalid {name(key)}={values.get(key, v[key])!r}; expected {expected}"
        )

    tile = _tile(v["tile"], bad("tile"))
    overlap = number(v["overlap"])
    if not _is_number(overlap) or not 0 <= overlap < 1:
        raise bad("overlap")("a fraction of the tile in [0, 1)")
    if v["blend"] not in BLENDS:
        raise bad("blend")(f"one of {', '.join(BLENDS)}")
    batch = number(v["batch_size"])
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise bad("batch_size")("a positive integer (tiles per replica per step)")
    tta = v["tta"]
    if isinstance(tta, str) and tta.lower() == "null":
        tta = None  # the model's own, spelled on a command line
    if tta is not None and tta not in TTA_MODES:
        raise bad("tta")(f"one of {', '.join(TTA_MODES)}, or null for the model's own")
    threshold = number(v["threshold"])
    if threshold is not None and (not _is_number(threshold) or not 0 < threshold < 1):
        raise bad("threshold")("a probability in (0, 1), or null for the model's own")
    probs = v["probabilities"]
    if probs is True:
        probs = "npy"
    elif probs is False or (isinstance(probs, str) and probs.lower() == "none"):
        probs = None
    if probs is not None and probs not in PROBABILITY_FORMATS:
        raise bad("probabilities")(f"null or one of {', '.join(PROBABILITY_FORMATS)}")
    for key in ("overlays", "skip_corrupt"):
        if not isinstance(v[key], bool):
            raise bad(key)("true or false")
    return PredictOptions(
        tile=tile,
        overlap=float(overlap),
        blend=v["blend"],
        batch_size=int(batch),
        tta=tta,
        threshold=None if threshold is None else float(threshold),
        probabilities=probs,
        overlays=v["overlays"],
        skip_corrupt=v["skip_corrupt"],
    )


def check_tile_for(model: Any, options: PredictOptions, name: Callable[[str], str] = str) -> None:
    """A fixed tile must be a multiple of the model's divisor (checked once the model is known,
    before any image is read).

    Raises:
        ConfigError: one line naming the option as the user spelled it and a tile that fits.
    """
    if not isinstance(options.tile, tuple):
        return
    divisor = int(getattr(model, "divisor", 1) or 1)
    if all(t % divisor == 0 for t in options.tile):
        return
    h, w = options.tile
    fit = [max(1, math.floor(t / divisor + 0.5)) * divisor for t in (h, w)]  # halves up
    shown = str(h) if h == w else f"{h}x{w}"
    suggestion = str(fit[0]) if fit[0] == fit[1] else f"{fit[0]}x{fit[1]}"
    raise ConfigError(
        f"Invalid {name('tile')}={shown}; expected a multiple of the model's divisor {divisor} "
        f"(e.g. {suggestion}), 'auto' or 'whole'"
    )
