"""`import zoo` turns TensorFlow's oneDNN kernels on (x86), only when it can and may.

Each case is a fresh interpreter: the choice is made once, when TensorFlow starts.
"""

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

x86 = pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64"),
    reason="oneDNN is turned on only on x86 CPUs",
)

# Prints the variable as the process sees it and whether TensorFlow runs oneDNN kernels.
PROBE = """
import os
{imports}
from tensorflow.python.util import _pywrap_util_port as port
print(os.environ.get("TF_ENABLE_ONEDNN_OPTS"), bool(port.IsMklEnabled()))
"""


def _probe(imports: str, env_value: str | None) -> tuple[str, bool]:
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    if env_value is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = env_value
    env.update(TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(imports=imports)],
        capture_output=True, text=True, env=env, cwd=ROOT, check=True,
    ).stdout.split()  # fmt: skip
    return out[0], out[1] == "True"


def _tensorflow_default() -> bool:
    """What TensorFlow chooses by itself on this CPU (it differs between CPUs)."""
    return _probe("import tensorflow", None)[1]


@x86
def test_import_zoo_first_turns_onednn_on():
    assert _probe("import zoo", None) == ("1", True)


@x86
def test_a_users_setting_is_kept():
    assert _probe("import zoo", "0") == ("0", False)


@x86
def test_after_tensorflow_started_zoo_changes_nothing():
    # Too late to change TensorFlow's choice, so the variable is left unset (not made to lie).
    value, on = _probe("import tensorflow\nimport zoo", None)
    assert value == "None"
    assert on == _tensorflow_default()
