"""`mcc`: Matthews correlation coefficient loss on logits (Abhishek & Hamarneh 2021), all modes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from keras import ops

from losses.base import LossLayer, register_term
from losses.core import REDUCTIONS, TINY, prepare, region_loss, region_stats, safe_div
from losses.modes import BINARY, MODES, validate_mode
from losses.options import (
    ClassIndices,
    ClassWeights,
    OneOf,
    OrNone,
    check_class_options,
    non_negative,
)

OPTIONS = {
    "eps": non_negative,
    "reduction": OneOf(REDUCTIONS),
    "classes": OrNone(ClassIndices()),
    "class_weights": OrNone(ClassWeights()),
}


def mcc(
    y_true: Any,
    y_pred: Any,
    weight: Any = None,
    *,
    mode: str = BINARY,
    ignore_index: int | None = None,
    eps: float = 1e-5,
    reduction: str = "batch",
    classes: Sequence[int] | None = None,
    class_weights: Sequence[float] | None = None,
) -> Any:
    """Soft MCC loss: 1 - mean_c MCC_c, each class against the rest.

    MCC = (tp tn - fp fn) / sqrt((tp + fp)(tp + fn)(tn + fp)(tn + fn)), with `eps` added to
    each of the four soft, weighted counts (which keeps a one-class batch finite).
    """
    validate_mode(mode, MODES, "mcc")
    target, logits, w = prepare(
        y_true, y_pred, weight, mode=mode, ignore_index=ignore_index, term="mcc"
    )
    check_class_options("mcc", logits.shape[-1], classes=classes, class_weights=class_weights)
    tp, fp, fn, n = region_stats(target, logits, w, mode, reduction)
    tn = n - tp - fp - fn
    tp, fp, fn, tn = tp + eps, fp + eps, fn + eps, tn + eps
    # A product of square roots keeps the factors at the counts' scale (the product of four
    # counts of a large batch is ~1e28 in float32).
    den = ops.prod(
        ops.sqrt(ops.maximum(ops.stack([tp + fp, tp + fn, tn + fp, tn + fn]), TINY)), axis=0
    )
    score = safe_div(tp * tn - fp * fn, den)
    return region_loss(1.0 - score, n, reduction, classes, class_weights)


@register_term
class MCC(LossLayer):
    """Matthews correlation coefficient loss on logits, as a loss layer (term `mcc`).

    Options: `eps` (added to each of tp, tn, fp, fn; default 1e-5, as smp's `MCCLoss`),
    `reduction`, `classes` and `class_weights` (as `dice`). All modes; several classes:
    one-vs-rest per class, averaged. Unlike Dice it counts the true negatives, so it
    penalizes false positives on images that are mostly background.

    Example:

    ```python
    value = MCC()([mask, logits])
    ```

    Reference:
    - [Abhishek & Hamarneh, 2021](https://arxiv.org/abs/2010.13454)
    """

    term, fn, modes, option_checks = "mcc", staticmethod(mcc), MODES, OPTIONS


MCCLoss = MCC.loss_class
