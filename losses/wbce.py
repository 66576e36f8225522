"""`wbce`: weighted binary cross-entropy on logits (binary or multilabel mode)."""

from __future__ import annotations

from typing import Any

from losses.base import LossLayer, register_term
from losses.core import NORMALIZATIONS, bce_with_logits, normalize, prepare
from losses.modes import BINARY, MULTILABEL, validate_mode
from losses.options import OneOf, fraction, positive

SUPPORTED = (BINARY, MULTILABEL)
OPTIONS = {
    "pos_weight": positive,
    "label_smoothing": fraction,
    "normalization": OneOf(NORMALIZATIONS),
}


def wbce(
    y_true: Any,
    y_pred: Any,
    weight: Any = None,
    *,
    mode: str = BINARY,
    ignore_index: int | None = None,
    pos_weight: float = 1.0,
    label_smoothing: float = 0.0,
    normalization: str = "weighted",
) -> Any:
    """Weighted binary cross-entropy on logits (binary or multilabel mode).

    l = -(pos_weight * t * log(sigmoid(x)) + (1 - t) * log(1 - sigmoid(x))), with
    t = y * (1 - label_smoothing) + label_smoothing / 2; reduced by `losses.core.normalize`.
    """
    validate_mode(mode, SUPPORTED, "wbce")
    target, logits, w = prepare(
        y_true, y_pred, weight, mode=mode, ignore_index=ignore_index, term="wbce"
    )
    if label_smoothing:
        target = target * (1.0 - label_smoothing) + 0.5 * label_smoothing
    loss = bce_with_logits(target, logits, pos_weight)
    return normalize(w * loss, w, normalization)


@register_term
class WeightedBCE(LossLayer):
    """Weighted binary cross-entropy on logits, as a loss layer (term `wbce`).

    Options: `pos_weight` (factor on positive pixels, default 1), `label_smoothing` (targets
    move to 0.5 by this fraction), `normalization` ("weighted": sum(w*l)/sum(w), default;
    "mean": sum(w*l)/count(w>0)). Modes: binary, multilabel.

    Example:

    ```python
    image = keras.Input((64, 64, 3), name="image")
    label = keras.Input((64, 64, 1), dtype="int32", name="label")
    weight = keras.Input((64, 64, 1), name="weight")
    logits = keras.layers.Conv2D(1, 3, padding="same")(image)
    loss = WeightedBCE()([label, weight, logits])
    model = keras.Model([image, label, weight], [logits, loss])
    model.compile(optimizer="adam")
    ```

    Reference:
    - The seed article's weighted-BCE loss layer; Ronneberger et al. 2015 (U-Net weight maps).
    """

    term, fn, modes, option_checks = "wbce", staticmethod(wbce), SUPPORTED, OPTIONS


WeightedBCELoss = WeightedBCE.loss_class
