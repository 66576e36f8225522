"""`resumable_fit`: Keras `fit` from any global step of a stream that starts at that step."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras


def resumable_fit(
    train_model: keras.Model,
    train_stream: Any,
    *,
    start_step: int,
    epochs: int,
    steps_per_epoch: int,
    stopped: bool = False,
    shard: Callable[[Any], Any] = lambda ds: ds,
    **fit_kwargs: Any,
) -> None:
    """`fit` from global step `start_step` of a stream that already starts at that step.

    A resumed partial epoch runs as its own short `fit` call (same epoch number, remaining
    steps), then the remaining whole epochs; both take batches from the same stream, in order.
    """
    epoch, done = divmod(start_step, steps_per_epoch)
    if stopped or epoch >= epochs:
        return
    if done:
        remaining = steps_per_epoch - done
        train_model.fit(
            shard(train_stream.take(remaining)),
            initial_epoch=epoch,
            epochs=epoch + 1,
            steps_per_epoch=remaining,
            **fit_kwargs,
        )
        epoch += 1
        if train_model.stop_training or epoch >= epochs:
            return
        train_stream = train_stream.skip(remaining)
    train_model.fit(
        shard(train_stream),
        initial_epoch=epoch,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        **fit_kwargs,
    )
