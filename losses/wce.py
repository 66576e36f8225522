"""`wce`: weighted sparse categorical cross-entropy on logits (multiclass mode)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from keras import ops

from losses.base import LossLayer, register_term
from losses.core import NORMALIZATIONS, normalize, prepare
from losses.modes import MULTICLASS, validate_mode
from losses.options import ClassWeights, OneOf, OrNone, check_class_options, fraction

SUPPORTED = (MULTICLASS,)
OPTIONS = {
    "class_weights": OrNone(ClassWeights()),
    "label_smoothing": fraction,
    "normalization": OneOf(NORMALIZATIONS),
}


def wce(
    y_true: Any,
    y_pred: Any,
    weight: Any = None,
    *,
    mode: str = MULTICLASS,
    ignore_index: int | None = None,
    class_weights: Sequence[float] | None = None,
    label_smoothing: float = 0.0,
    normalization: str = "weighted",
) -> Any:
    """Weighted sparse categorical cross-entropy on logits (multiclass mode).

    l = -sum_c t_c log softmax(x)_c; a pixel of class k weighs w * class_weights[k].
    """
    validate_mode(mode, SUPPORTED, "wce")
    target, logits, w = prepare(
        y_true, y_pred, weight, mode=mode, ignore_index=ignore_index, term="wce"
    )
    if class_weights is not None:
        check_class_options("wce", logits.shape[-1], class_weights=class_weights)
        cw = ops.convert_to_tensor(list(class_weights), "float32")
        w = w * ops.sum(target * cw, axis=-1, keepdims=True)
    if label_smoothing:
        target = target * (1.0 - label_smoothing) + label_smoothing / logits.shape[-1]
    logp = ops.log_softmax(logits, axis=-1)
    loss = -ops.sum(target * logp, axis=-1, keepdims=True)
    return normalize(w * loss, w, normalization)


@register_term
class WeightedCE(LossLayer):
    """Weighted sparse categorical cross-entropy on logits, as a loss layer (term `wce`).

    Options: `class_weights` (one factor per class, multiplying the pixel weight),
    `label_smoothing`, `normalization` (as `wbce`). Mode: multiclass.

    Example:

    ```python
    layer = WeightedCE(mode="multiclass", class_weights=[0.5, 1.0, 2.0], ignore_index=255)
    value = layer([mask, weight, logits])
    ```
    """

    term, fn, modes, option_checks = "wce", staticmethod(wce), SUPPORTED, OPTIONS


WeightedCELoss = WeightedCE.loss_class
