"""Test-time augmentation: flip groups and the dihedral group D4 on image batches.

An element is ``(mirror, k)``: mirror left-right (if `mirror`), then rotate ``k`` quarter
turns counter-clockwise. Its inverse undoes both in reverse order, exactly (flips and quarter
turns move pixels, they never interpolate), on tensors of any height and width: a quarter
turn of an ``h x w`` tile is ``w x h``, and the model (fully convolutional, dynamic input
size) runs on it as it is.

- ``"none"``: the identity;
- ``"hflip"``: identity and left-right (for models trained with left-right flips only, e.g.
  anatomy or street scenes, whose up-down orientation is fixed);
- ``"flip"``: identity, left-right, up-down, both (a group of 4: averaging over it is itself
  left-right and up-down symmetric);
- ``"d4"``: the 8 rotations and reflections of the square.

Predictions are averaged in probability space (after the sigmoid/softmax), as nnU-Net does.

A model may record its own mode (``model.metadata["tta"]``: `recipe=auto` records the flips
it trained with, `predict.tta` of a training run records what it was given); ``tta=None``
in the predictors means that mode, or "none" when the model records none or logits are
asked for (an average of probabilities has no logits).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

TTA_MODES = ("none", "hflip", "flip", "d4")
# (mirror, quarter turns). Up-down flip = mirror then a half turn; both flips = a half turn.
TRANSFORMS: dict[str, tuple[tuple[bool, int], ...]] = {
    "none": ((False, 0),),
    "hflip": ((False, 0), (True, 0)),
    "flip": ((False, 0), (True, 0), (True, 2), (False, 2)),
    "d4": tuple((m, k) for m in (False, True) for k in range(4)),
}


def check_tta(tta: Any) -> str:
    if tta not in TTA_MODES:
        raise ValueError(
            f"Invalid value for argument `tta`: expected one of {TTA_MODES}. Received: tta={tta!r}"
        )
    return tta


def model_tta(model: Any) -> str:
    """The TTA mode `model` records (``metadata["tta"]``), "none" when it records none."""
    meta = getattr(model, "metadata", None) or {}
    own = meta.get("tta") or "none"
    if own not in TTA_MODES:
        raise ValueError(
            f"The model's metadata['tta']={own!r} is not one of {TTA_MODES}: pass `tta`"
        )
    return own


def resolve_tta(model: Any, tta: str | None, output: str = "probabilities") -> str:
    """`tta` checked, or for None the model's own mode (`model_tta`; "none" for logits).

    Example:
        >>> resolve_tta(None, "flip")
        'flip'
    """
    if tta is None:
        return model_tta(model) if output == "probabilities" else "none"
    return check_tta(tta)


def forward(x: tf.Tensor, mirror: bool, k: int) -> tf.Tensor:
    """Apply ``(mirror, k)`` to a (B, H, W, C) tensor."""
    if mirror:
        x = tf.reverse(x, axis=[2])
    return tf.image.rot90(x, k) if k % 4 else x


def inverse(y: tf.Tensor, mirror: bool, k: int) -> tf.Tensor:
    """Undo ``(mirror, k)`` on a (B, H', W', C) tensor."""
    if k % 4:
        y = tf.image.rot90(y, (4 - k) % 4)
    return tf.reverse(y, axis=[2]) if mirror else y


def forward_np(x: np.ndarray, mirror: bool, k: int) -> np.ndarray:
    """NumPy twin of `forward` for (..., H, W, C) arrays (H, W = axes -3, -2)."""
    if mirror:
        x = np.flip(x, axis=-2)
    return np.rot90(x, k, axes=(-3, -2))


def inverse_np(y: np.ndarray, mirror: bool, k: int) -> np.ndarray:
    """NumPy twin of `inverse`."""
    y = np.rot90(y, -k, axes=(-3, -2))
    return np.flip(y, axis=-2) if mirror else y
