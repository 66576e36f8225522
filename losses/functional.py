"""Pure loss math on `keras.ops`: every term of the `losses` package, computed in float32.

All functions take `y_true` (a mask), `y_pred` (per-pixel *logits*, channels last) and an
optional per-pixel `weight` map and return a scalar. One rule holds everywhere: a pixel whose
mask value equals `ignore_index`, or whose weight is 0, is left out of the numerator *and* the
denominator of every term (see docs/losses.md).

Modes:
- `"binary"`: `y_pred` has 1 channel (sigmoid), `y_true` holds 0/1 (B, H, W, 1).
- `"multiclass"`: `y_pred` has C channels (softmax), `y_true` holds class ids (B, H, W, 1).
- `"multilabel"`: `y_pred` has C channels (sigmoid each), `y_true` holds 0/1 (B, H, W, C);
  `ignore_index` applies per element.

Mask values outside the valid range (0/1 in binary and multilabel mode, 0..C-1 in multiclass
mode, besides `ignore_index`) are refused, never computed with: see `check_labels`.

Under `tf.distribute` every sum is taken over the *global* batch (an all-reduce in the replica
context), so a replica's loss equals the single-device loss of the global batch; see
`global_sum` for how the gradient stays correct under Keras' 1/num_replicas loss scaling.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import keras
from keras import ops

BINARY = "binary"
MULTICLASS = "multiclass"
MULTILABEL = "multilabel"
MODES = (BINARY, MULTICLASS, MULTILABEL)
NORMALIZATIONS = ("weighted", "mean")
REDUCTIONS = ("batch", "image")

# Floor of every denominator that may be 0 (all pixels ignored): 0 / floor = 0, never nan.
_TINY = 1e-12


# --------------------------------------------------------------------------- helpers

_STATE = threading.local()


@contextlib.contextmanager
def replica_local() -> Iterator[None]:
    """Within this block `global_sum` is the identity: sums stay on the local replica.

    Needed where a cross-replica sync inside the forward pass would break Keras'
    bookkeeping: `Layer.add_loss` keeps one list per layer that MirroredStrategy's replica
    threads share, and a sync point lets them interleave their entries.
    """
    previous = getattr(_STATE, "local", False)
    _STATE.local = True
    try:
        yield
    finally:
        _STATE.local = previous


def global_sum(x: Any) -> Any:
    """`x` summed over the replicas of a `tf.distribute` strategy (identity elsewhere).

    The value is the all-reduced sum; the gradient flows only through this replica's `x`,
    multiplied by the number of replicas. Keras scales each replica's loss by 1/replicas and
    sums the replicas' gradients, so the update equals the single-device gradient of the
    global-batch loss.
    """
    if keras.backend.backend() != "tensorflow" or getattr(_STATE, "local", False):
        return x
    import tensorflow as tf

    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return x
    const = tf.stop_gradient(x)
    total = ctx.all_reduce(tf.distribute.ReduceOp.SUM, const)
    return total + float(ctx.num_replicas_in_sync) * (x - const)


def _safe_div(num: Any, den: Any) -> Any:
    return num / ops.maximum(den, _TINY)


@contextlib.contextmanager
def labels_checked() -> Iterator[None]:
    """Within this block `prepare` skips `check_labels`: the caller has checked the mask."""
    previous = getattr(_STATE, "checked", False)
    _STATE.checked = True
    try:
        yield
    finally:
        _STATE.checked = previous


def label_bounds(mode: str, num_classes: int | None) -> tuple[float, float]:
    """The valid mask values `[low, high]` of `mode` (besides `ignore_index`)."""
    if mode == MULTICLASS:
        return 0.0, float(num_classes - 1) if num_classes else math.inf
    return 0.0, 1.0


def label_range(y_true: Any, ignore_index: int | None = None) -> tuple[Any, Any]:
    """float32 `(min, max)` of the mask values that are not `ignore_index` (0 where none)."""
    y_true = ops.convert_to_tensor(y_true)
    if ignore_index is not None:
        valid = ops.not_equal(y_true, ops.cast(ignore_index, y_true.dtype))
        y_true = ops.where(valid, y_true, ops.zeros_like(y_true))
    y_true = ops.cast(y_true, "float32")
    return ops.min(y_true), ops.max(y_true)


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _label_rule(
    mode: str, num_classes: int | None, ignore_index: int | None, term: Any, quote: bool = True
) -> str:
    names = [term] if isinstance(term, str) else list(term)
    names = [repr(n) if quote else n for n in names]
    what = f"loss {names[0]}" if len(names) == 1 else f"losses {', '.join(names)}"
    low, high = label_bounds(mode, num_classes)
    if mode == MULTICLASS:
        valid = f"class ids 0..{_number_text(high)} (the logits have {num_classes} channels)"
    else:
        valid = "values in [0, 1]"
    if ignore_index is not None:
        valid += f" or ignore_index={ignore_index}"
    return f"for {what} ({mode} mode): expected {valid}"


def label_error(
    low_seen: float,
    high_seen: float,
    *,
    mode: str,
    num_classes: int | None,
    ignore_index: int | None,
    term: str | Sequence[str],
) -> str | None:
    """The one-line error for mask values in `[low_seen, high_seen]`, or None if they are valid."""
    low, high = label_bounds(mode, num_classes)
    if low <= low_seen and high_seen <= high:
        return None
    bad = high_seen if high_seen > high else low_seen
    text = _number_text(bad)
    fixes = []
    if float(bad).is_integer() and ignore_index is None:
        fixes.append(f"pass ignore_index={text} if {text} marks pixels to leave out")
    if mode != MULTICLASS and bad == 255:
        fixes.append("divide a 0/255 mask by 255")
    if mode == MULTICLASS and bad > high:
        fixes.append(f"build the model with more classes if {text} is a class id")
    fix = "; ".join(fixes) if fixes else "correct the mask"
    return (
        f"Invalid mask value {text} {_label_rule(mode, num_classes, ignore_index, term)}. "
        f"To fix: {fix}. Received: mask values in "
        f"[{_number_text(low_seen)}, {_number_text(high_seen)}]"
    )


def in_xla_context() -> bool:
    """Whether the code being traced is compiled with XLA (which drops `Assert` ops)."""
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return tf.__internal__.get_enclosing_xla_context() is not None


def check_labels(
    y_true: Any,
    *,
    mode: str,
    num_classes: int | None,
    ignore_index: int | None = None,
    term: str | Sequence[str] = "loss",
    record: Callable[[Any, Any], None] | None = None,
) -> Any:
    """Refuse mask values outside the valid range: one min/max reduction of the mask.

    Eagerly, a bad value raises a one-line `ValueError` naming it, the valid range and the fix.
    In a graph, `record(low, high)` receives the range if given (`losses.attach` raises the same
    `ValueError` on the host after the step, which works under XLA too) and the returned factor
    is 0 for a bad batch; without `record` a graph `Assert` fails the step (XLA drops `Assert`
    ops, so there the returned factor, NaN for a bad batch, poisons the loss instead).

    Returns:
        None (eager, or symbolic Keras tensors), or a float32 scalar to multiply the loss with:
        1 for valid masks.
    """
    if keras.backend.is_keras_tensor(y_true):
        return None
    lo, hi = label_range(y_true, ignore_index)
    details = {"mode": mode, "num_classes": num_classes, "ignore_index": ignore_index, "term": term}
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    if tf.executing_eagerly():
        message = label_error(float(lo), float(hi), **details)
        if message:
            raise ValueError(message)
        return None
    low, high = label_bounds(mode, num_classes)
    ok = ops.logical_and(lo >= low, hi <= high)
    if record is not None:
        record(lo, hi)
        return ops.where(ok, 1.0, 0.0)
    if not in_xla_context():
        # A graph cannot format the value into the message; the Assert prints it after.
        # No quotes: the Assert would print them escaped.
        rule = _label_rule(mode, num_classes, ignore_index, term, quote=False)
        hint = " (pass ignore_index=V if value V marks pixels to leave out)"
        message = f"Invalid mask value {rule}{hint}. Received: mask values in [min, max] ="
        tf.debugging.Assert(ok, [message, lo, hi])
    return ops.where(ok, 1.0, math.nan)


def validate_mode(mode: str, allowed: Sequence[str] = MODES, term: str = "loss") -> str:
    if mode not in allowed:
        raise ValueError(
            f"Invalid value for argument `mode` of {term}: expected one of {list(allowed)}. "
            f"Received: mode={mode!r}"
        )
    return mode


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
    if not getattr(_STATE, "checked", False):
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


def _normalize(wl: Any, w: Any, normalization: str) -> Any:
    """sum(w * l) / sum(w) ("weighted") or sum(w * l) / count(w > 0) ("mean")."""
    num = global_sum(ops.sum(wl))
    w = ops.broadcast_to(w, ops.shape(wl))
    if normalization == "weighted":
        den = ops.sum(w)
    else:
        den = ops.sum(ops.cast(w > 0, "float32"))
    return _safe_div(num, global_sum(den))


def _bce_with_logits(target: Any, logits: Any, pos_weight: float = 1.0) -> Any:
    # Stable form: (1 - t) x + (1 + (pw - 1) t) softplus(-x); softplus never overflows.
    if pos_weight == 1.0:
        return ops.softplus(logits) - target * logits
    return (1.0 - target) * logits + (1.0 + (pos_weight - 1.0) * target) * ops.softplus(-logits)


def _probs(logits: Any, mode: str) -> Any:
    return ops.softmax(logits, axis=-1) if mode == MULTICLASS else ops.sigmoid(logits)


def _select(values: Any, classes: Sequence[int] | None) -> Any:
    if classes is None:
        return values
    return ops.take(values, list(classes), axis=-1)


def check_class_options(
    term: str,
    num_classes: int | None,
    *,
    class_weights: Sequence[float] | None = None,
    classes: Sequence[int] | None = None,
) -> None:
    """One-line `ValueError` if `class_weights` / `classes` do not fit `num_classes` channels."""
    if num_classes is None:
        return
    if class_weights is not None and len(class_weights) != num_classes:
        raise ValueError(
            f"Invalid value for argument `class_weights` of loss {term!r}: expected one weight "
            f"per class, {num_classes} for logits with {num_classes} channels. Received: "
            f"class_weights={list(class_weights)} ({len(class_weights)} weights)"
        )
    if classes is not None and any(not 0 <= c < num_classes for c in classes):
        raise ValueError(
            f"Invalid value for argument `classes` of loss {term!r}: expected channel indices "
            f"0..{num_classes - 1} (the logits have {num_classes} channels). Received: "
            f"classes={list(classes)}"
        )


def _region_stats(
    target: Any, logits: Any, w: Any, mode: str, reduction: str
) -> tuple[Any, Any, Any, Any]:
    """Soft, weighted tp / fp / fn and the weight n of each class's pixels.

    Shape (C,) summed over the global batch ("batch") or (B, C) per image ("image"). A class
    (of an image) with n = 0 has no pixel that counts: every pixel ignored or weighted 0.
    """
    p = _probs(logits, mode)
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


def _region_loss(per_class: Any, n: Any, reduction: str, classes: Sequence[int] | None) -> Any:
    """Mean of the per-class losses over the classes (and images) that have pixels that count.

    A class with n = 0 is an empty set: it is left out of the mean, and if nothing is left the
    loss is 0 with a zero gradient.
    """
    per_class, n = _select(per_class, classes), _select(n, classes)
    counts = n > 0
    per_class = ops.where(counts, per_class, ops.zeros_like(per_class))
    valid = ops.cast(counts, "float32")
    if reduction == "batch":
        # Statistics were summed over the global batch already: identical on every replica.
        return _safe_div(ops.sum(per_class), ops.sum(valid))
    # Mean over the images of the global batch that have pixels that count, of the per-image
    # mean over its classes that do.
    classes_per_image = ops.sum(valid, axis=-1)
    per_image = _safe_div(ops.sum(per_class, axis=-1), classes_per_image)
    images = ops.sum(ops.cast(classes_per_image > 0, "float32"))
    return _safe_div(global_sum(ops.sum(per_image)), global_sum(images))


# --------------------------------------------------------------------------- terms


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
    t = y * (1 - label_smoothing) + label_smoothing / 2; reduced by `_normalize`.
    """
    validate_mode(mode, (BINARY, MULTILABEL), "wbce")
    target, logits, w = prepare(
        y_true, y_pred, weight, mode=mode, ignore_index=ignore_index, term="wbce"
    )
    if label_smoothing:
        target = target * (1.0 - label_smoothing) + 0.5 * label_smoothing
    loss = _bce_with_logits(target, logits, pos_weight)
    return _normalize(w * loss, w, normalization)


def wce(
    y_true: Any,
    y_pred: Any,
    weight: Any = None,
    *,
    mode: str = MULTICLASS,
    ignore_index: int | None = None,
    class_weights: Sequence[float] | None = None,
    label_smoothing: float = 0.0,
    normalization: str = "weighted",
) -> Any:
    """Weighted sparse categorical cross-entropy on logits (multiclass mode).

    l = -sum_c t_c log softmax(x)_c; a pixel of class k weighs w * class_weights[k].
    """
    validate_mode(mode, (MULTICLASS,), "wce")
    target, logits, w = prepare(
        y_true, y_pred, weight, mode=mode, ignore_index=ignore_index, term="wce"
    )
    if class_weights is not None:
        check_class_options("wce", logits.shape[-1], class_weights=class_weights)
        cw = ops.convert_to_tensor(list(class_weights), "float32")
        w = w * ops.sum(target * cw, axis=-1, keepdims=True)
    if label_smoothing:
        target = target * (1.0 - label_smoothing) + label_smoothing / logits.shape[-1]
    logp = ops.log_softmax(logits, axis=-1)
    loss = -ops.sum(target * logp, axis=-1, keepdims=True)
    return _normalize(w * loss, w, normalization)


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
        ce = _bce_with_logits(target, logits)
        # 1 - p_t from sigmoid(-x) / sigmoid(x): exact near 0, where 1 - sigmoid(x) is not.
        one_minus_pt = target * ops.sigmoid(-logits) + (1.0 - target) * ops.sigmoid(logits)
        alpha_t = None if alpha is None else alpha * target + (1.0 - alpha) * (1.0 - target)
    # The floor keeps d/dq q^gamma finite at q = 0 for gamma < 1.
    loss = ops.power(ops.maximum(one_minus_pt, _TINY), gamma) * ce
    if alpha_t is not None:
        loss = alpha_t * loss
    return _normalize(w * loss, w, normalization)


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
) -> Any:
    """Soft Dice loss: 1 - mean_c (2 tp_c + smooth) / (2 tp_c + fp_c + fn_c + smooth + eps)."""
    validate_mode(mode, MODES, "dice")
    target, logits, w = prepare(
        y_true, y_pred, weight, mode=mode, ignore_index=ignore_index, term="dice"
    )
    check_class_options("dice", logits.shape[-1], classes=classes)
    tp, fp, fn, n = _region_stats(target, logits, w, mode, reduction)
    score = _safe_div(2.0 * tp + smooth, 2.0 * tp + fp + fn + smooth + eps)
    return _region_loss(1.0 - score, n, reduction, classes)


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
) -> Any:
    """Soft Jaccard (IoU) loss: 1 - mean_c (tp_c + smooth) / (tp_c + fp_c + fn_c + smooth + eps)."""
    validate_mode(mode, MODES, "jaccard")
    target, logits, w = prepare(
        y_true, y_pred, weight, mode=mode, ignore_index=ignore_index, term="jaccard"
    )
    check_class_options("jaccard", logits.shape[-1], classes=classes)
    tp, fp, fn, n = _region_stats(target, logits, w, mode, reduction)
    score = _safe_div(tp + smooth, tp + fp + fn + smooth + eps)
    return _region_loss(1.0 - score, n, reduction, classes)


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
) -> Any:
    """(Focal) Tversky loss: mean_c (1 - TI_c)^gamma,
    TI_c = (tp_c + smooth) / (tp_c + alpha fp_c + beta fn_c + smooth + eps).

    `alpha` weighs false positives and `beta` false negatives, as in Salehi et al. 2017.
    """
    validate_mode(mode, MODES, "tversky")
    target, logits, w = prepare(
        y_true, y_pred, weight, mode=mode, ignore_index=ignore_index, term="tversky"
    )
    check_class_options("tversky", logits.shape[-1], classes=classes)
    tp, fp, fn, n = _region_stats(target, logits, w, mode, reduction)
    score = _safe_div(tp + smooth, tp + alpha * fp + beta * fn + smooth + eps)
    loss = 1.0 - score
    if gamma != 1.0:
        loss = ops.power(ops.maximum(loss, _TINY), gamma)
    return _region_loss(loss, n, reduction, classes)


FUNCTIONS = {
    "wbce": wbce,
    "wce": wce,
    "focal": focal,
    "dice": dice,
    "jaccard": jaccard,
    "tversky": tversky,
}
