"""`focal`: focal loss on logits (Lin et al. 2017), all modes."""

from __future__ import annotations

from typing import Any

from keras import ops

from losses.base import LossLayer, register_term
from losses.core import NORMALIZATIONS, TINY, bce_with_logits, normalize, prepare
from losses.modes import BINARY, MODES, MULTICLASS, validate_mode
from losses.options import OneOf, OrNone, fraction, non_negative

OPTIONS = {"alpha": OrNone(fraction), "gamma": non_negative, "normalization": OneOf(NORMALIZATIONS)}


def focal(
    y_true: Any,
    y_pred: Any,
    weight: Any = None,
    *,
    mode: str = BINARY,
    ignore_index: int | None = None,
    alpha: float | None = 0.25,
    gamma: float = 2.0,
    normalization: str = "weighted",
) -> Any:
    """Focal loss (Lin et al. 2017): alpha_t * (1 - p_t)^gamma * CE.

    Binary/multilabel: sigmoid per channel, alpha_t = alpha t + (1 - alpha)(1 - t).
    Multiclass: softmax, CE of the true class, `alpha` (if given) scales every pixel.
    """
    validate_mode(mode, MODES, "focal")
    target, logits, w = prepare(
        y_true, y_pred, weight, mode=mode, ignore_index=ignore_index, term="focal"
    )
    if mode == MULTICLASS:
        logp = ops.sum(target * ops.log_softmax(logits, axis=-1), axis=-1, keepdims=True)
        one_minus_pt = 1.0 - ops.exp(logp)
        ce = -logp
        alpha_t = alpha
    else:
        ce = bce_with_logits(target, logits)
        # 1 - p_t from sigmoid(-x) / sigmoid(x): exact near 0, where 1 - sigmoid(x) is not.
        one_minus_pt = target * ops.sigmoid(-logits) + (1.0 - target) * ops.sigmoid(logits)
        alpha_t = None if alpha is None else alpha * target + (1.0 - alpha) * (1.0 - target)
    # The floor keeps d/dq q^gamma finite at q = 0 for gamma < 1.
    loss = ops.power(ops.maximum(one_minus_pt, TINY), gamma) * ce
    if alpha_t is not None:
        loss = alpha_t * loss
    return normalize(w * loss, w, normalization)


@register_term
class Focal(LossLayer):
    """Focal loss on logits, as a loss layer (term `focal`).

    Options: `alpha` (positive-class balance in [0, 1], or None; default 0.25), `gamma`
    (focusing exponent >= 0, default 2), `normalization` (as `wbce`). All modes.

    Example:

    ```python
    value = Focal(alpha=0.25, gamma=2.0)([mask, weight, logits])
    ```

    Reference:
    - [Lin et al., 2017](https://arxiv.org/abs/1708.02002)
    """

    term, fn, modes, option_checks = "focal", staticmethod(focal), MODES, OPTIONS


FocalLoss = Focal.loss_class
