"""Loss terms as Keras loss layers and losses, and the composition wrapper (docs/losses.md).

Terms: wbce, wce, focal, dice, jaccard, tversky. Each is a loss layer (`losses.get(name)`,
seed style `layer([y_true, y_weight, y_pred])`) and a `keras.losses.Loss`
(`losses.get_loss(name)`), both on the pure functions in `losses.functional`.
`losses.attach(model, "0.5*wbce+dice")` returns a training model with "mask"/"weight" inputs.
"""

from losses import functional as functional
from losses.compose import LossTerms, attach, parse_spec
from losses.registry import LOSSES, get, get_loss, list_losses, register_loss
from losses.terms import (
    Dice,
    DiceLoss,
    Focal,
    FocalLoss,
    Jaccard,
    JaccardLoss,
    LossLayer,
    TermLoss,
    Tversky,
    TverskyLoss,
    WeightedBCE,
    WeightedBCELoss,
    WeightedCE,
    WeightedCELoss,
)

__all__ = [
    "LOSSES",
    "Dice",
    "DiceLoss",
    "Focal",
    "FocalLoss",
    "Jaccard",
    "JaccardLoss",
    "LossLayer",
    "LossTerms",
    "TermLoss",
    "Tversky",
    "TverskyLoss",
    "WeightedBCE",
    "WeightedBCELoss",
    "WeightedCE",
    "WeightedCELoss",
    "attach",
    "functional",
    "get",
    "get_loss",
    "list_losses",
    "parse_spec",
    "register_loss",
]
