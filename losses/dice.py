"""`dice`: soft Dice loss on logits (Milletari et al. 2016), all modes."""

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


def dice(
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
    """Soft Dice loss: 1 - mean_c (2 tp_c + smooth) / (2 tp_c + fp_c + fn_c + smooth + eps)."""
    validate_mode(mode, MODES, "dice")
    target, logits, w = prepare(
        y_true, y_pred, weight, mode=mode, ignore_index=ignore_index, term="dice"
    )
    check_class_options("dice", logits.shape[-1], classes=classes, class_weights=class_weights)
    tp, fp, fn, n = region_stats(target, logits, w, mode, reduction)
    score = safe_div(2.0 * tp + smooth, 2.0 * tp + fp + fn + smooth + eps)
    return region_loss(overlap_loss(score, log_loss, eps), n, reduction, classes, class_weights)


@register_term
class Dice(LossLayer):
    """Soft Dice loss on logits, as a loss layer (term `dice`).

    Options: `smooth` (added to numerator and denominator, default 1), `eps` (denominator
    floor, default 1e-7), `reduction` ("batch": statistics over the whole batch, default;
    "image": one score per image, averaged), `classes` (subset of channel indices averaged),
    `class_weights` (one weight per channel: a weighted mean over the classes), `log_loss`
    (`-log(score)` instead of `1 - score`, floored at `eps`). All modes.

    Example:

    ```python
    value = Dice(mode="multiclass", classes=[1, 2])([mask, weight, logits])
    ```

    Reference:
    - [Milletari et al., 2016](https://arxiv.org/abs/1606.04797)
    """

    term, fn, modes, option_checks = "dice", staticmethod(dice), MODES, OPTIONS


DiceLoss = Dice.loss_class
