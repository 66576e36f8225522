"""A one-line text progress display for long prediction jobs: overall and per image.

    [###########.........]  3/10 images  scene.tif  tiles 120/480  1:02 elapsed  ~2:40 left

Drawn on a terminal only (stderr is a TTY; redrawn with a carriage return at most a few
times a second); silent otherwise, so logs and pipes get no control characters.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


def _clock(seconds: float) -> str:
    seconds = int(max(0.0, seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class TextProgress:
    """Progress of `total` images, each in tiles (`update` is a `TiledPredictor` progress).

    Args:
        total: number of images.
        stream: where to draw (default stderr).
        enabled: draw at all; default: when `stream` is a terminal.
        interval: least seconds between redraws.
    """

    def __init__(
        self,
        total: int,
        stream: TextIO | None = None,
        enabled: bool | None = None,
        interval: float = 0.2,
    ) -> None:
        self.total = int(total)
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.enabled = enabled
        self.interval = interval
        self.index = 0
        self.name = ""
        self.fraction = 0.0  # of the current image
        self.start = time.monotonic()
        self._last = 0.0
        self._width = 0

    def image(self, index: int, name: str) -> None:
        """Image `index` (0-based) starts."""
        self.index, self.name, self.fraction = int(index), str(name), 0.0
        self._draw(force=True, tiles="")

    def update(self, done: int, total: int) -> None:
        """`done` of `total` tiles of the current image are predicted."""
        self.fraction = done / total if total else 1.0
        self._draw(force=done >= total, tiles=f"tiles {done}/{total}")

    def close(self) -> None:
        """End the line (nothing when disabled)."""
        if self.enabled and self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0

    def _draw(self, force: bool, tiles: str) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        done = (self.index + self.fraction) / self.total if self.total else 1.0
        elapsed = now - self.start
        bar = int(20 * done)
        parts = [
            f"[{'#' * bar}{'.' * (20 - bar)}]",
            f"{min(self.index + 1, self.total)}/{self.total} images",
            self.name,
            tiles,
            f"{_clock(elapsed)} elapsed",
        ]
        if 0 < done < 1 and elapsed > 2:
            parts.append(f"~{_clock(elapsed * (1 - done) / done)} left")
        line = "  ".join(p for p in parts if p)
        pad = max(0, self._width - len(line))
        self.stream.write("\r" + line + " " * pad)
        self.stream.flush()
        self._width = len(line)

    def __enter__(self) -> TextProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
