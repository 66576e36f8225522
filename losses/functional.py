"""Pure loss math on `keras.ops`: every term of the `losses` package as a function, in float32.

All functions take `y_true` (a mask), `y_pred` (per-pixel *logits*, channels last) and an
optional per-pixel `weight` map and return a scalar. One rule holds everywhere: a pixel whose
mask value equals `ignore_index`, or whose weight is 0, is left out of the numerator *and* the
denominator of every term (see docs/losses.md).

Modes (`losses.modes`):
- `"binary"`: `y_pred` has 1 channel (sigmoid), `y_true` holds 0/1 (B, H, W, 1).
- `"multiclass"`: `y_pred` has C channels (softmax), `y_true` holds class ids (B, H, W, 1).
- `"multilabel"`: `y_pred` has C channels (sigmoid each), `y_true` holds 0/1 (B, H, W, C);
  `ignore_index` applies per element.

Mask values outside the valid range (0/1 in binary and multilabel mode, 0..C-1 in multiclass
mode, besides `ignore_index`) are refused, never computed with: see `losses.labels`.

Under `tf.distribute` every sum is taken over the *global* batch (an all-reduce in the replica
context), so a replica's loss equals the single-device loss of the global batch; see
`losses.distribution.global_sum`. The one exception is `lovasz` with `reduction="batch"`: it
sorts the pixels, which no sum can join across replicas, so each replica sorts its own share
and the replicas' losses are averaged (`reduction="image"` is exact).

This module gathers what the term files define (`losses/wbce.py`, ... one file per term) and
the shared helpers (`losses.core`), so ``losses.functional.dice(...)`` is the pure function.
"""

from losses.core import NORMALIZATIONS, REDUCTIONS, prepare
from losses.dice import dice
from losses.focal import focal
from losses.jaccard import jaccard
from losses.labels import check_labels, label_bounds, label_error, label_range
from losses.lovasz import lovasz
from losses.mcc import mcc
from losses.modes import BINARY, MODES, MULTICLASS, MULTILABEL, validate_mode
from losses.options import check_class_options
from losses.tversky import tversky
from losses.wbce import wbce
from losses.wce import wce

__all__ = [
    "BINARY",
    "MODES",
    "MULTICLASS",
    "MULTILABEL",
    "NORMALIZATIONS",
    "REDUCTIONS",
    "check_class_options",
    "check_labels",
    "dice",
    "focal",
    "jaccard",
    "label_bounds",
    "label_error",
    "label_range",
    "lovasz",
    "mcc",
    "prepare",
    "tversky",
    "validate_mode",
    "wbce",
    "wce",
]
