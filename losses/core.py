"""The math every loss term shares, on `keras.ops` and in float32.

All terms take `y_true` (a mask), `y_pred` (per-pixel *logits*, channels last) and an optional
per-pixel `weight` map and return a scalar. One rule holds everywhere: a pixel whose mask value
equals `ignore_index`, or whose weight is 0, is left out of the numerator *and* the denominator
of every term (see docs/losses.md). `prepare` applies it, and refuses out-of-range mask values
(`losses.labels`); `normalize` reduces the per-pixel terms, `region_stats` / `region_loss` the
region terms (Dice, Jaccard, Tversky). Every sum goes through `losses.distribution.global_sum`,
so under `tf.distribute` a term is the loss of the global batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from keras import ops

from losses.distribution import global_sum
from losses.labels import check_labels, checked_by_caller
from losses.modes import BINARY, MULTICLASS, validate_mode

NORMALIZATIONS = ("weighted", "mean")
REDUCTIONS = ("batch", "image")

# Floor of every denominator that may be 0 (all pixels ignored): 0 / floor = 0, never nan.
TINY = 1e-12


def safe_div(num: Any, den: Any) -> Any:
    """`num / den` with `den` floored at `TINY`: 0 / 0 is 0."""
    return num / ops.maximum(den, TINY)


def prepare(
    y_true: Any,
    y_pred: Any,
    weight: Any = None,
    *,
    mode: str = BINARY,
    ignore_index: int | None = None,
    term: str = "loss",
) -> tuple[Any, Any, Any]:
    """Float32 `(target, logits, w)` with `target` shaped like `y_pred` (one-hot in multiclass).

    `w` is the per-pixel weight times the valid-pixel indicator, shaped (B, H, W, 1), or
    (B, H, W, C) in multilabel mode (ignore applies per element there).
    """
    validate_mode(mode)
    logits = ops.cast(y_pred, "float32")
    y_true = ops.convert_to_tensor(y_true)
    rank = len(logits.shape)
    if len(y_true.shape) == rank - 1:
        y_true = ops.expand_dims(y_true, -1)
    factor = None
    if not checked_by_caller():
        factor = check_labels(
            y_true, mode=mode, num_classes=logits.shape[-1], ignore_index=ignore_index, term=term
        )
    if ignore_index is not None:
        valid = ops.not_equal(y_true, ops.cast(ignore_index, y_true.dtype))
        y_true = ops.where(valid, y_true, ops.zeros_like(y_true))
        w = ops.cast(valid, "float32")
    else:
        w = None
    if mode == MULTICLASS:
        num_classes = logits.shape[-1]
        target = ops.one_hot(ops.cast(ops.squeeze(y_true, -1), "int32"), num_classes)
    else:
        target = ops.cast(y_true, "float32")
    if weight is not None:
        weight = ops.cast(weight, "float32")
        # (B,) per-image or (B, H, W) maps broadcast as (B, 1, 1, 1) / (B, H, W, 1).
        while len(weight.shape) < rank:
            weight = ops.expand_dims(weight, -1)
        w = weight if w is None else w * weight
    if w is None:
        w = ops.ones_like(logits[..., :1])
    if factor is not None:
        # On the logits, not the weights: a NaN weight would read as "no pixel counts".
        logits = logits * factor
    return target, logits, w


def normalize(wl: Any, w: Any, normalization: str) -> Any:
    """sum(w * l) / sum(w) ("weighted") or sum(w * l) / count(w > 0) ("mean")."""
    num = global_sum(ops.sum(wl))
    w = ops.broadcast_to(w, ops.shape(wl))
    if normalization == "weighted":
        den = ops.sum(w)
    else:
        den = ops.sum(ops.cast(w > 0, "float32"))
    return safe_div(num, global_sum(den))


def bce_with_logits(target: Any, logits: Any, pos_weight: float = 1.0) -> Any:
    """Per-element binary cross-entropy of `sigmoid(logits)`, positives weighted `pos_weight`."""
    # Stable form: (1 - t) x + (1 + (pw - 1) t) softplus(-x); softplus never overflows.
    if pos_weight == 1.0:
        return ops.softplus(logits) - target * logits
    return (1.0 - target) * logits + (1.0 + (pos_weight - 1.0) * target) * ops.softplus(-logits)


def probabilities(logits: Any, mode: str) -> Any:
    """Softmax over the channels in multiclass mode, sigmoid per channel otherwise."""
    return ops.softmax(logits, axis=-1) if mode == MULTICLASS else ops.sigmoid(logits)


def region_stats(
    target: Any, logits: Any, w: Any, mode: str, reduction: str
) -> tuple[Any, Any, Any, Any]:
    """Soft, weighted tp / fp / fn and the weight n of each class's pixels.

    Shape (C,) summed over the global batch ("batch") or (B, C) per image ("image"). A class
    (of an image) with n = 0 has no pixel that counts: every pixel ignored or weighted 0.
    """
    p = probabilities(logits, mode)
    rank = len(logits.shape)
    axes = tuple(range(rank - 1)) if reduction == "batch" else tuple(range(1, rank - 1))
    wp = w * p
    tp = ops.sum(wp * target, axis=axes)
    fp = ops.sum(wp, axis=axes) - tp
    fn = ops.sum(w * target, axis=axes) - tp
    n = ops.sum(w, axis=axes) + ops.zeros_like(tp)  # (B, H, W, 1) weights: same n per class
    if reduction == "batch":
        # One all-reduce for the four statistics.
        tp, fp, fn, n = ops.unstack(global_sum(ops.stack([tp, fp, fn, n])), 4)
    return tp, fp, fn, n


def overlap_loss(score: Any, log_loss: bool, eps: float) -> Any:
    """`1 - score`, or `-log(score)` (floored at `eps`) with `log_loss`, as smp's option."""
    if log_loss:
        return -ops.log(ops.maximum(score, max(eps, TINY)))
    return 1.0 - score


def _select(values: Any, classes: Sequence[int] | None) -> Any:
    if classes is None:
        return values
    return ops.take(values, list(classes), axis=-1)


def region_loss(
    per_class: Any,
    n: Any,
    reduction: str,
    classes: Sequence[int] | None,
    class_weights: Sequence[float] | None = None,
) -> Any:
    """Mean of the per-class losses over the classes (and images) that have pixels that count.

    A class with n = 0 is an empty set: it is left out of the mean, and if nothing is left the
    loss is 0 with a zero gradient. `classes` restricts the mean to those channels;
    `class_weights` (one per channel) makes it a weighted mean.
    """
    per_class, n = _select(per_class, classes), _select(n, classes)
    counts = n > 0
    per_class = ops.where(counts, per_class, ops.zeros_like(per_class))
    valid = ops.cast(counts, "float32")
    if class_weights is not None:
        valid = valid * _select(ops.convert_to_tensor(list(class_weights), "float32"), classes)
    per_class = per_class * valid
    if reduction == "batch":
        # Statistics were summed over the global batch already: identical on every replica.
        return safe_div(ops.sum(per_class), ops.sum(valid))
    # Mean over the images of the global batch that have pixels that count, of the per-image
    # (weighted) mean over its classes that do.
    classes_per_image = ops.sum(valid, axis=-1)
    per_image = safe_div(ops.sum(per_class, axis=-1), classes_per_image)
    images = ops.sum(ops.cast(classes_per_image > 0, "float32"))
    return safe_div(global_sum(ops.sum(per_image)), global_sum(images))
