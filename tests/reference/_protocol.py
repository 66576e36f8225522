"""Shared argument handling of the reference scripts (run by tests/torch_ref.py, never by pytest).

Each script: `parse()` gives (inputs dict of numpy arrays, options dict, save function).
These scripts import torch and must never import TensorFlow, Keras or the zoo.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

import numpy as np


def parse() -> tuple[dict[str, np.ndarray], dict[str, Any], Callable[..., None]]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--inputs", required=True)
    parser.add_argument("--outputs", required=True)
    parser.add_argument("--options", default="{}")
    args = parser.parse_args()
    with np.load(args.inputs, allow_pickle=False) as data:
        inputs = {k: data[k] for k in data.files}

    def save(**arrays: np.ndarray) -> None:
        np.savez(args.outputs, **{k: np.asarray(v) for k, v in arrays.items()})

    return inputs, json.loads(args.options), save
