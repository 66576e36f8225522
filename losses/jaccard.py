"""`jaccard`: soft Jaccard (IoU) loss on logits, all modes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from losses.base import LossLayer, register_term
from losses.core import REDUCTIONS, overlap_loss, prepare, region_loss, region_stats, safe_div
from losses.modes import BINARY, MODES, validate_mode
from losses.options import (
    ClassIndices,
    ClassWeights,
    OneOf,
    OrNone,
    check_class_options,
    flag,
    non_negative,
)

OPTIONS = {
    "smooth": non_negative,
    "eps": non_negative,
    "reduction": OneOf(REDUCTIONS),
    "classes": OrNone(ClassIndices()),
    "class_weights": OrNone(ClassWeights()),
    "log_loss": flag,
}


def jaccard(
    y_true: Any,
    y_pred: Any,
    weight: Any = None,
    *,
    mode: str = BINARY,
    ignore_index: int | None = None,
    smooth: float = 1.0,
    eps: float = 1e-7,
    reduction: str = "batch",
    classes: Sequence[int] | None = None,
    class_weights: Sequence[float] | None = None,
    log_loss: bool = False,
) -> Any:
    """Soft Jaccard (IoU) loss: 1 - mean_c (tp_c + smooth) / (tp_c + fp_c + fn_c + smooth + eps)."""
    validate_mode(mode, MODES, "jaccard")
    target, logits, w = prepare(
        y_true, y_pred, weight, mode=mode, ignore_index=ignore_index, term="jaccard"
    )
    check_class_options("jaccard", logits.shape[-1], classes=classes, class_weights=class_weights)
    tp, fp, fn, n = region_stats(target, logits, w, mode, reduction)
    score = safe_div(tp + smooth, tp + fp + fn + smooth + eps)
    return region_loss(overlap_loss(score, log_loss, eps), n, reduction, classes, class_weights)


@register_term
class Jaccard(LossLayer):
    """Soft Jaccard (IoU) loss on logits, as a loss layer (term `jaccard`).

    Options: `smooth`, `eps`, `reduction`, `classes`, `class_weights`, `log_loss` (as `dice`).
    All modes.

    Example:

    ```python
    value = Jaccard()([mask, logits])
    ```

    Reference:
    - [Rahman & Wang, 2016](https://doi.org/10.1007/978-3-319-50835-1_22)
    """

    term, fn, modes, option_checks = "jaccard", staticmethod(jaccard), MODES, OPTIONS


JaccardLoss = Jaccard.loss_class
