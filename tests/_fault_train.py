"""Run train.py with a signal sent to itself right after a chosen global step (tests only).

    python tests/_fault_train.py KILL@7 <train.py overrides...>     # SIGKILL after step 7
    python tests/_fault_train.py INT@5 ...                          # Ctrl-C after step 5
    python tests/_fault_train.py TERM@5 ...                         # preemption after step 5

The sender runs after the step's backup callback and before the stop-on-signal check, the
position a signal arriving during the next step would have.
"""

from __future__ import annotations

import os
import re
import runpy
import signal
import sys
from pathlib import Path

import keras

ROOT = Path(__file__).resolve().parents[1]


class SendSignal(keras.callbacks.Callback):
    def __init__(self, sig: signal.Signals, step: int) -> None:
        super().__init__()
        self.sig, self.at = sig, step

    def on_train_batch_end(self, batch, logs=None) -> None:
        if int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)) == self.at:
            os.kill(os.getpid(), self.sig)


def main() -> None:
    spec = sys.argv.pop(1)
    match = re.fullmatch(r"(KILL|INT|TERM)@(\d+)", spec)
    if not match:
        sys.exit(f"bad fault spec {spec!r}; expected KILL@<step>, INT@<step> or TERM@<step>")
    sender = SendSignal(signal.Signals[f"SIG{match[1]}"], int(match[2]))

    from zoo.training import loop

    build = loop.build_callbacks

    def with_sender(*args, **kwargs):
        callbacks = build(*args, **kwargs)
        callbacks.extra.append(sender)
        return callbacks

    loop.build_callbacks = with_sender
    sys.argv[0] = str(ROOT / "train.py")
    sys.path.insert(0, str(ROOT))
    runpy.run_path(str(ROOT / "train.py"), run_name="__main__")


if __name__ == "__main__":
    main()
