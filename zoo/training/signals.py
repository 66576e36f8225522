"""Stop a run cleanly on SIGINT (Ctrl-C) or SIGTERM (preemption by SLURM, Kubernetes, ...).

While `StopRequests` is active, the first SIGINT or SIGTERM only records the signal; the backup
callback stops training at the next step boundary after writing a backup (see
`zoo.training.callbacks.StopOnSignal`), and the run exits with 128 + the signal number (130 for
SIGINT, 143 for SIGTERM), the convention of shells and schedulers. A second SIGINT interrupts at
once (a stuck run can still be stopped from the keyboard).
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
    """Training stopped on a signal, after writing a backup a rerun resumes from.

    Attributes:
        signum: the signal received.
        step: the global step trained when the run stopped.
        backup: the backup file a rerun continues from (None before the first one).
    """

    def __init__(self, signum: int, step: int, backup: Path | None) -> None:
        self.signum, self.step, self.backup = int(signum), int(step), backup
        name = signal.Signals(self.signum).name
        where = (
            f"backup {backup}. Rerun the same command to resume."
            if backup is not None
            else "no backup yet, a rerun starts over."
        )
        what = "Interrupted" if self.signum == signal.SIGINT else f"Stopped by {name}"
        super().__init__(f"{what} at step {step}; {where}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopRequests:
    """Context manager recording SIGINT/SIGTERM instead of dying, for a clean stop.

    Example:

    ```python
    with StopRequests() as requests:
        model.fit(..., callbacks=[StopOnSignal(requests, ...)])
    ```
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: stop now
        self.signum = self.signum or signum

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
