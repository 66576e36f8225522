"""`fit_length`: Keras `fit` over a `TrainingLength`, from any global step of an indexed stream."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras

from zoo.training.backup import read_value


def fit_length(
    train_model: keras.Model,
    stream_at: Callable[[int], Any],
    *,
    start_step: int,
    length: Any,
    stopped: bool = False,
    shard: Callable[[Any], Any] = lambda ds: ds,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    first_stream: Any = None,
    **fit_kwargs: Any,
) -> None:
    """Train from global step `start_step` to `length.total` in Keras epochs of `length.interval`.

    Keras epoch e covers global steps [e * interval, (e + 1) * interval). A resumed partial
    epoch and a last, shorter epoch (`total` not a multiple of the interval) run as their own
    `fit` calls; the whole epochs between them as one. A time budget's run is stopped inside
    its last epoch by `BudgetCallback` instead (its total moves when it re-plans). Every call
    takes its batches from `stream_at(step)`, the training stream from that global step, so the
    batches are those of an uninterrupted run. While a time budget has not planned yet
    (`length.interval` or `length.total` is None) the calls are one epoch each; the first epoch
    of a fresh budget run is open-ended (`length.provisional`) until `BudgetCallback` ends it
    at the planned interval.

    Args:
        train_model: the compiled training model.
        stream_at: global step -> the (infinite) training stream from that step.
        start_step: the global step to start from (the model's optimizer is there).
        length: the run's `zoo.training.length.TrainingLength` (read again after every call).
        stopped: the resumed run had already stopped (early stopping, budget): do nothing.
        shard: distributes a dataset (`zoo.distribute.shard`).
        callbacks: the Keras callbacks of every call.
        first_stream: `stream_at(start_step)` if already built.
        **fit_kwargs: passed to every `fit` call (validation data, verbosity, ...).
    """
    if stopped:
        return
    step = int(start_step)
    budget = length.kind == "budget"
    stream = first_stream if first_stream is not None else stream_at(step)
    while True:
        total, every = length.total, length.interval
        if total is not None and step >= total:
            return
        if every is None:  # a budget run before its first plan: an open-ended first epoch
            length.provisional = True
            kw: dict[str, Any] = {"initial_epoch": 0, "epochs": 1, "steps_per_epoch": None}
        else:
            epoch, done = divmod(step, every)
            left = every - done
            if total is not None and not budget:  # a fixed end: the last epoch may be shorter
                left = min(left, total - step)
            if left < every or total is None:  # partial epoch, or one at a time (unplanned)
                if left < every:
                    stream = stream.take(left)
                kw = {"initial_epoch": epoch, "epochs": epoch + 1, "steps_per_epoch": left}
            else:
                # A budget's total moves with its re-plans: whole epochs, BudgetCallback stops
                # the run at the planned step (inside an epoch) or the deadline.
                whole = -(-(total - step) // every) if budget else (total - step) // every
                kw = {"initial_epoch": epoch, "epochs": epoch + whole, "steps_per_epoch": every}
        try:
            train_model.fit(shard(stream), callbacks=list(callbacks), **kw, **fit_kwargs)
        finally:
            length.provisional = False
        for cb in callbacks:  # later calls continue the same log
            if isinstance(cb, keras.callbacks.CSVLogger):
                cb.append = True
        reached = int(read_value(train_model.optimizer.iterations))
        if train_model.stop_training or reached <= step:
            return
        step = reached
        stream = stream_at(step)
