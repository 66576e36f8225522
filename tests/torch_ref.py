"""Run reference code (PyTorch, segmentation_models_pytorch, transformers) in its own interpreter.

TensorFlow 2.21 and torch in one process crash (tensorflow/tensorflow#124205), so parity tests
never import torch: they write their inputs to an `.npz` file, run a script of
`tests/reference/` in a separate Python, and read the arrays it writes back.

The interpreter is `$SEGZOO_REF_PYTHON` if set, else this Python when the `ref` extra is
installed in it (`pip install -e ".[ref]"`). Without one, tests marked with
`requires_reference(...)` skip and say what to install.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REF_ENV = "SEGZOO_REF_PYTHON"
SCRIPTS = Path(__file__).resolve().parent / "reference"


def reference_python() -> str:
    """The interpreter that runs reference scripts."""
    return os.environ.get(REF_ENV) or sys.executable


@functools.cache
def missing_modules(*modules: str) -> tuple[str, ...]:
    """Which of `modules` the reference interpreter cannot import (checked in a subprocess)."""
    code = (
        "import importlib.util, json, sys\n"
        "print(json.dumps([m for m in sys.argv[1:] if importlib.util.find_spec(m) is None]))"
    )
    try:
        out = subprocess.run(
            [reference_python(), "-c", code, *modules],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
        return tuple(json.loads(out.strip().splitlines()[-1]))
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return tuple(modules)


def requires_reference(*modules: str) -> pytest.MarkDecorator:
    """Skip unless the reference interpreter can import `modules` (torch, smp, ...)."""
    missing = missing_modules(*modules)
    return pytest.mark.skipif(
        bool(missing),
        reason=(
            f"reference packages {list(missing)} not installed in {reference_python()}: "
            f'pip install -e ".[ref]" (or set {REF_ENV} to a Python that has them)'
        ),
    )


def run_reference(
    script: str, arrays: dict[str, np.ndarray] | None = None, timeout: float = 600, **options: Any
) -> dict[str, np.ndarray]:
    """Run `tests/reference/<script>.py --inputs IN.npz --outputs OUT.npz --options JSON`.

    Args:
        script: file name in `tests/reference/` without `.py`.
        arrays: inputs handed to the script as an `.npz` file.
        timeout: seconds before the reference run is killed.
        **options: JSON-serializable options for the script.

    Returns:
        The arrays the script saved to its `--outputs` file.
    """
    with tempfile.TemporaryDirectory(prefix="segzoo_ref_") as tmp:
        inputs, outputs = Path(tmp) / "inputs.npz", Path(tmp) / "outputs.npz"
        np.savez(inputs, **(arrays or {}))
        cmd = [
            reference_python(),
            str(SCRIPTS / f"{script}.py"),
            "--inputs",
            str(inputs),
            "--outputs",
            str(outputs),
            "--options",
            json.dumps(options),
        ]
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONHASHSEED": "0"}
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        if proc.returncode != 0:
            raise RuntimeError(
                f"reference script {script} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
            )
        with np.load(outputs, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}


def smp_param_counts(requests: list[dict[str, Any]]) -> list[int]:
    """Trainable parameter counts of smp models (tests/reference/smp_param_count.py), every
    request (arch, encoder, used_only, ...) answered by one reference interpreter: its start-up
    (torch, smp) costs more than building most models."""
    return [int(c) for c in run_reference("smp_param_count", models=requests)["counts"]]
