"""`PeerWatchdog`: end a process that waits too long for its multi-worker peers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys


class PeerWatchdog:
    """Kill this process with a clear message if a block does not finish within `timeout_s`.

    TensorFlow blocks in C++ while it waits for peers (holding the GIL, so a Python timer thread
    never runs, and ignoring SIGTERM); a small separate process is the reliable clock. It
    prints the message to our stderr and sends SIGKILL, so the worker exits non-zero instead of
    hanging. Leaving the block in time stops the watchdog.

    Args:
        timeout_s: seconds to allow; `<= 0` disables the watchdog.
        what: shown in the message (which task and cluster were waited for).

    Example:

    ```python
    with PeerWatchdog(120, "worker:1 in {...}"):
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    ```
    """

    EXIT_MESSAGE = "ERROR: peers unreachable"

    def __init__(self, timeout_s: float, what: str = "the cluster") -> None:
        self.timeout_s = float(timeout_s)
        self.what = what
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PeerWatchdog:
        if self.timeout_s <= 0:
            return self
        message = (
            f"{self.EXIT_MESSAGE}: {self.what} did not come up within strategy.timeout_s="
            f"{self.timeout_s:g} s. Check that every worker was started, that TF_CONFIG/SLURM "
            "lists the same hosts and ports on all of them, and that those ports are reachable."
        )
        code = (
            "import os, sys, time\n"
            "parent, deadline = int(sys.argv[1]), time.monotonic() + float(sys.argv[2])\n"
            "while time.monotonic() < deadline:\n"
            "    time.sleep(0.2)\n"
            "    if os.getppid() != parent: sys.exit(0)\n"  # parent gone: nothing to do
            "sys.stderr.write(sys.argv[3] + '\\n'); sys.stderr.flush()\n"
            f"os.kill(parent, {int(signal.SIGKILL)})\n"
        )
        self._proc = subprocess.Popen(
            [sys.executable, "-c", code, str(os.getpid()), str(self.timeout_s), message],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None
