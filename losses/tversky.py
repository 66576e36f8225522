"""`tversky`: (focal) Tversky loss on logits (Salehi et al. 2017), all modes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from keras import ops

from losses.base import LossLayer, register_term
from losses.core import REDUCTIONS, TINY, overlap_loss, prepare, region_loss, region_stats, safe_div
from losses.modes import BINARY, MODES, validate_mode
from losses.options import (
    ClassIndices,
    ClassWeights,
    OneOf,
    OrNone,
    check_class_options,
    flag,
    non_negative,
    positive,
)

OPTIONS = {
    "alpha": non_negative,
    "beta": non_negative,
    "gamma": positive,  # 0 would make every loss 1, with no gradient
    "smooth": non_negative,
    "eps": non_negative,
    "reduction": OneOf(REDUCTIONS),
    "classes": OrNone(ClassIndices()),
    "class_weights": OrNone(ClassWeights()),
    "log_loss": flag,
}


def tversky(
    y_true: Any,
    y_pred: Any,
    weight: Any = None,
    *,
    mode: str = BINARY,
    ignore_index: int | None = None,
    alpha: float = 0.5,
    beta: float = 0.5,
    gamma: float = 1.0,
    smooth: float = 1.0,
    eps: float = 1e-7,
    reduction: str = "batch",
    classes: Sequence[int] | None = None,
    class_weights: Sequence[float] | None = None,
    log_loss: bool = False,
) -> Any:
    """(Focal) Tversky loss: mean_c (1 - TI_c)^gamma,
    TI_c = (tp_c + smooth) / (tp_c + alpha fp_c + beta fn_c + smooth + eps).

    `alpha` weighs false positives and `beta` false negatives, as in Salehi et al. 2017.
    """
    validate_mode(mode, MODES, "tversky")
    target, logits, w = prepare(
        y_true, y_pred, weight, mode=mode, ignore_index=ignore_index, term="tversky"
    )
    check_class_options("tversky", logits.shape[-1], classes=classes, class_weights=class_weights)
    tp, fp, fn, n = region_stats(target, logits, w, mode, reduction)
    score = safe_div(tp + smooth, tp + alpha * fp + beta * fn + smooth + eps)
    loss = overlap_loss(score, log_loss, eps)
    if gamma != 1.0:
        loss = ops.power(ops.maximum(loss, TINY), gamma)
    return region_loss(loss, n, reduction, classes, class_weights)


@register_term
class Tversky(LossLayer):
    """(Focal) Tversky loss on logits, as a loss layer (term `tversky`).

    Options: `alpha` (false-positive weight), `beta` (false-negative weight), `gamma`
    (exponent of 1 - TI; 1 = plain Tversky), `smooth`, `eps`, `reduction`, `classes`,
    `class_weights`, `log_loss` (`(-log TI_c)^gamma` instead).
    alpha = beta = 0.5 gives Dice. All modes.

    Example:

    ```python
    value = Tversky(alpha=0.3, beta=0.7, gamma=0.75)([mask, weight, logits])
    ```

    Reference:
    - [Salehi et al., 2017](https://arxiv.org/abs/1706.05721);
      [Abraham & Khan, 2019](https://arxiv.org/abs/1810.07842) (focal Tversky)
    """

    term, fn, modes, option_checks = "tversky", staticmethod(tversky), MODES, OPTIONS


TverskyLoss = Tversky.loss_class
