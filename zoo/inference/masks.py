"""Masks from probabilities, the right way for each mode (never an arg-max for multilabel)."""

from __future__ import annotations

from typing import Any

import numpy as np

from zoo.errors import ConfigError


def _bad(name: str, value: Any, expected: str) -> ConfigError:
    """A bad argument (a `ConfigError`, hence a `ValueError`): one line for the CLIs too."""
    return ConfigError(
        f"Invalid value for argument `{name}`: {expected}. Received: {name}={value!r}"
    )


def mask_threshold(model: Any, threshold: Any = None) -> Any:
    """`threshold` if given, else the model's metadata "threshold", else 0.5."""
    if threshold is None:
        threshold = getattr(model, "metadata", {}).get("threshold", 0.5)
    return threshold


def to_mask(
    values: np.ndarray, mode: str, threshold: Any = 0.5, from_logits: bool = False
) -> np.ndarray:
    """Masks from (..., K) probabilities (or logits), the right way for the model's mode.

    - "binary" (K = 1): ``p > threshold`` as uint8 0/1, shape (...);
    - "multiclass": the arg-max class id, uint8 (uint16 beyond 256 classes), shape (...);
    - "multilabel": ``p_k > threshold_k`` per label (never an arg-max), uint8 (..., K);
      `threshold` may be one number or one per label.

    Example:
        >>> to_mask(np.array([[[0.7], [0.2]]]), "binary").tolist()
        [[1, 0]]
    """
    values = np.asarray(values)
    if mode == "multiclass":
        dtype = np.uint8 if values.shape[-1] <= 256 else np.uint16
        return np.argmax(values, axis=-1).astype(dtype)
    if mode not in ("binary", "multilabel"):
        raise _bad("mode", mode, "expected one of ('binary', 'multiclass', 'multilabel')")
    thr = np.asarray(threshold, np.float64)
    if (
        np.any((thr <= 0) | (thr >= 1))
        or thr.ndim > 1
        or (thr.ndim == 1 and thr.shape[0] != values.shape[-1])
    ):
        raise _bad(
            "threshold",
            threshold,
            f"expected a probability in (0, 1), or one per label ({values.shape[-1]})",
        )
    if from_logits:
        thr = np.log(thr / (1 - thr))  # sigmoid(z) > t  <=>  z > logit(t)
    mask = (values > thr.astype(values.dtype)).astype(np.uint8)
    return mask[..., 0] if mode == "binary" else mask
