"""Reading PyTorch state dicts as ``{key: numpy array}``, without importing torch here.

* ``.safetensors``: read with the `safetensors` NumPy API (no torch needed). bfloat16 tensors,
  which NumPy has no type for, are widened to float32.
* ``.pth`` / ``.pt`` / ``.bin`` (``torch.save`` of a state dict): converted to a temporary
  ``.safetensors`` file by a separate Python process that has torch, then read as above.
  TensorFlow and torch in one process crash (tensorflow/tensorflow#124205), so torch is never
  imported next to the zoo. The converting interpreter is ``$SEGZOO_TORCH_PYTHON`` if set,
  else this one. It loads with ``torch.load(weights_only=True)``: no pickled code runs.

Checkpoints that wrap the state dict (``{"state_dict": ...}`` from PyTorch Lightning,
``{"model": ...}``) are unwrapped, and a ``module.`` prefix (DataParallel) is dropped.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from zoo.errors import MissingFileError, ModelFileError

TORCH_PYTHON_ENV = "SEGZOO_TORCH_PYTHON"
SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
_CONVERTER = Path(__file__).resolve().parent / "_torch_to_safetensors.py"


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """``{key: array}`` of a ``.safetensors`` or torch (``.pth``/``.pt``/``.bin``) file.

    Args:
        path: the checkpoint file.

    Raises:
        MissingFileError: no such file.
        ModelFileError: an unknown suffix, or a file that is not a state dict (one line each).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"No checkpoint file at {path}")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        return _unwrap(read_safetensors(path))
    if suffix in TORCH_SUFFIXES:
        return _unwrap(_read_torch(path))
    raise ModelFileError(
        f"Cannot read checkpoint {path}: expected a .safetensors file or a torch state dict "
        f"({', '.join(TORCH_SUFFIXES)}). Received suffix {path.suffix!r}"
    )


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All tensors of a ``.safetensors`` file as NumPy arrays (bfloat16 -> float32)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return dict(load_file(str(path)))
    except (SafetensorError, TypeError, ValueError) as err:
        if "bf16" in str(err).lower() or "bfloat16" in str(err).lower():
            return _read_safetensors_raw(Path(path))
        raise ModelFileError(f"Cannot read {path} as a .safetensors file: {err}") from None


_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


def _read_safetensors_raw(path: Path) -> dict[str, np.ndarray]:
    """The safetensors format by hand (8-byte header length, JSON header, raw little-endian
    data), for the one dtype the NumPy API refuses: bfloat16 (the top half of a float32)."""
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    body = memoryview(data)[8 + length :]
    out = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        start, end = info["data_offsets"]
        raw = body[start:end]
        if info["dtype"] == "BF16":
            halves = np.frombuffer(raw, "<u2").astype(np.uint32) << 16
            array = halves.view(np.float32)
        elif info["dtype"] in _DTYPES:
            array = np.frombuffer(raw, np.dtype(_DTYPES[info["dtype"]]).newbyteorder("<"))
        else:
            raise ModelFileError(f"Cannot read {path}: tensor {key!r} has dtype {info['dtype']}")
        out[key] = array.reshape(info["shape"]).copy()
    return out


def _read_torch(path: Path) -> dict[str, np.ndarray]:
    python = os.environ.get(TORCH_PYTHON_ENV) or sys.executable
    with tempfile.TemporaryDirectory(prefix="segzoo_port_") as tmp:
        out = Path(tmp) / "converted.safetensors"
        proc = subprocess.run(
            [python, str(_CONVERTER), str(path), str(out)],
            capture_output=True,
            text=True,
            env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
        )
        if proc.returncode != 0:
            lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
            reason = lines[-1] if lines else f"exit code {proc.returncode}"
            if "No module named 'torch'" in proc.stderr:
                reason = (
                    f"reading {path.suffix} files needs PyTorch, which {python} does not have: "
                    f"pip install torch, set {TORCH_PYTHON_ENV} to a Python with torch, or "
                    "convert the file to .safetensors"
                )
            raise ModelFileError(f"Cannot read checkpoint {path}: {reason}")
        return read_safetensors(out)


def _unwrap(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    for wrapper in ("state_dict.", "model.", "module."):
        if state and all(k.startswith(wrapper) for k in state):
            state = {k[len(wrapper) :]: v for k, v in state.items()}
    return state
