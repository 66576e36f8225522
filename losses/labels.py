"""Mask-range checks: mask values outside the valid range are refused, never computed with.

Valid are values in [0, 1] in binary and multilabel mode (soft targets included) and class ids
0..C-1 in multiclass mode, besides `ignore_index` (docs/losses.md). The check is one min/max
reduction of the mask. Where its error surfaces depends on how the loss runs:

- eagerly: `check_labels` raises a one-line `ValueError` (`label_error`);
- in a graph: a `tf.debugging.Assert` fails the step; XLA drops `Assert` ops, so there the loss
  is poisoned with NaN instead;
- inside a `losses.attach` training model: each replica records the mask range in a variable
  (`LabelGuard`) and `checked_step` raises the same `ValueError` on the host after the step,
  under XLA and `tf.distribute` too.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import keras
from keras import ops

from losses.modes import MULTICLASS

_STATE = threading.local()

# Seconds between host-side reads of the recorded mask ranges in fit/evaluate/predict loops.
CHECK_EVERY_S = 0.5


@contextlib.contextmanager
def labels_checked() -> Iterator[None]:
    """Within this block `losses.core.prepare` skips `check_labels`: the caller checked the mask."""
    previous = getattr(_STATE, "checked", False)
    _STATE.checked = True
    try:
        yield
    finally:
        _STATE.checked = previous


def checked_by_caller() -> bool:
    """Whether the code runs inside `labels_checked()`."""
    return getattr(_STATE, "checked", False)


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


class LabelGuard:
    """The mask check of one `LossTerms` layer, made to raise a one-line error under XLA too.

    One check per `(mode, ignore_index)` group of terms. While a step wrapped by
    `checked_step` runs (`host_check` set), each replica records the min/max mask value of the
    batch in a per-replica variable and a bad batch contributes 0 to the loss; `raise_if_bad`
    then reads the variables on the host after the step and raises the `ValueError` of
    `label_error`. Outside such a step `check_labels` applies (an eager `ValueError`, a graph
    `Assert`, NaN under XLA).

    Args:
        groups: `(mode, ignore_index)` -> the names of the terms that use it (for the message).
    """

    def __init__(self, groups: Mapping[tuple[str, int | None], list[str]]) -> None:
        self.groups = dict(groups)
        self.host_check = False
        self.num_classes: int | None = None
        self.ranges = None
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            # ON_READ: each replica writes its own copy, no cross-replica traffic in the step.
            self.ranges = [
                tf.Variable(
                    tf.zeros(2),
                    trainable=False,
                    synchronization=tf.VariableSynchronization.ON_READ,
                    aggregation=tf.VariableAggregation.SUM,
                    name="mask_range",
                )
                for _ in self.groups
            ]

    def check_in_graph(self, y_true: Any, num_classes: int | None) -> Any:
        """Check `y_true` for every group; None or the factor to multiply every term with."""
        self.num_classes = num_classes
        factor = None
        for i, ((mode, ignore_index), names) in enumerate(self.groups.items()):
            record = None
            if self.host_check and self.ranges is not None:
                record = self._recorder(self.ranges[i])
            f = check_labels(
                y_true,
                mode=mode,
                num_classes=num_classes,
                ignore_index=ignore_index,
                term=names,
                record=record,
            )
            if f is not None:
                factor = f if factor is None else factor * f
        return factor

    @staticmethod
    def _recorder(var: Any) -> Callable[[Any, Any], None]:
        def record(lo: Any, hi: Any) -> None:
            var.assign(ops.stack([ops.minimum(var[0], lo), ops.maximum(var[1], hi)]))

        return record

    def raise_if_bad(self) -> None:
        """Raise the one-line `ValueError` if a recorded mask range is invalid (then reset)."""
        if self.ranges is None:
            return
        import tensorflow as tf

        for var, ((mode, ignore_index), names) in zip(self.ranges, self.groups.items()):
            strategy = getattr(var, "distribute_strategy", None) or tf.distribute.get_strategy()
            parts = [p.numpy() for p in strategy.experimental_local_results(var)]
            lo, hi = min(float(p[0]) for p in parts), max(float(p[1]) for p in parts)
            message = label_error(
                lo,
                hi,
                mode=mode,
                num_classes=self.num_classes,
                ignore_index=ignore_index,
                term=names,
            )
            if message:
                for v in self.ranges:
                    v.assign(tf.zeros(2))
                raise ValueError(message)


def _is_iterator(value: Any) -> bool:
    """Whether a step function got a dataset iterator (fit/evaluate/predict loops)."""
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return isinstance(value, tf.data.Iterator | tf.distribute.DistributedIterator)


def checked_step(function: Any, guards: Sequence[LabelGuard]) -> Any:
    """Wrap a Keras train / test / predict function so the guards' host checks run after it.

    Returns `function` itself if it is None or already wrapped.
    """
    if function is None or getattr(function, "_segzoo_checked", False):
        return function
    last = [-math.inf]

    def checked(*args: Any, **kwargs: Any) -> Any:
        # Set while tracing too: the traced step records mask ranges for the host check.
        for guard in guards:
            guard.host_check = True
        try:
            outputs = function(*args, **kwargs)
        finally:
            for guard in guards:
                guard.host_check = False
        # Reading the ranges costs a host round trip (~0.1 ms): done on the first step and
        # then at most every CHECK_EVERY_S in fit/evaluate/predict loops (which check once
        # more when they end); *_on_batch calls always check. A bad batch meanwhile
        # contributes 0 to the loss, so nothing is learned from it.
        now = time.monotonic()
        if not _is_iterator(args[0] if args else None) or now - last[0] >= CHECK_EVERY_S:
            last[0] = now
            for guard in guards:
                guard.raise_if_bad()
        return outputs

    checked._segzoo_checked = True
    return checked
