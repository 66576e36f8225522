"""Wall time of the phases of a run (start-up, fingerprint, train, evaluate, export)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class PhaseTimer:
    """Seconds per named phase, for metrics.json (`as_dict`: {"<phase>_s": seconds}).

    Example:
        >>> timer = PhaseTimer()
        >>> with timer.phase("fingerprint"):
        ...     pass
        >>> sorted(timer.seconds)
        ['fingerprint']
    """

    clock: Callable[[], float] = time.monotonic
    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = self.clock()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + (self.clock() - start)

    def add(self, name: str, seconds: float) -> None:
        """Count `seconds` to phase `name` (for code that cannot be wrapped in `phase`)."""
        self.seconds[name] = self.seconds.get(name, 0.0) + float(seconds)

    def as_dict(self) -> dict[str, float]:
        return {f"{k}_s": round(v, 3) for k, v in self.seconds.items()}
