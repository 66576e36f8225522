"""Loss terms as Keras loss layers and losses, and the composition wrapper (docs/losses.md).

Terms: wbce, wce, focal, dice, jaccard, tversky, lovasz, mcc, one file each
(`losses/dice.py`: the pure function, its option table and its layer; the `keras.losses.Loss`
twin is derived). Each is a loss layer (`losses.get(name)`, seed style
`layer([y_true, y_weight, y_pred])`) and a `keras.losses.Loss` (`losses.get_loss(name)`), both
on the pure functions in `losses.functional`.
`losses.attach(model, "0.5*wbce+dice")` returns a training model with "mask"/"weight" inputs.

This package imports nothing from `zoo`: zoo builds on it (its registries use
`losses.registry.Registry`).
"""

from losses import functional as functional
from losses.base import LossLayer, TermLoss
from losses.compose import LossTerms, attach
from losses.deep import NearestDownsample, level_weights
from losses.dice import Dice, DiceLoss
from losses.focal import Focal, FocalLoss
from losses.jaccard import Jaccard, JaccardLoss
from losses.lovasz import Lovasz, LovaszLoss
from losses.mcc import MCC, MCCLoss
from losses.registry import LOSSES, get, get_loss, list_losses, register_loss
from losses.spec import parse_spec
from losses.tversky import Tversky, TverskyLoss
from losses.wbce import WeightedBCE, WeightedBCELoss
from losses.wce import WeightedCE, WeightedCELoss

__all__ = [
    "LOSSES",
    "MCC",
    "MCCLoss",
    "Dice",
    "DiceLoss",
    "Focal",
    "FocalLoss",
    "Jaccard",
    "JaccardLoss",
    "LossLayer",
    "LossTerms",
    "Lovasz",
    "LovaszLoss",
    "NearestDownsample",
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
    "level_weights",
    "list_losses",
    "parse_spec",
    "register_loss",
]
