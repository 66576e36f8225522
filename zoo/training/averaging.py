"""Validating and saving the moving average of the weights (`trainer.ema_momentum`).

The optimizer keeps the average (Keras' `use_ema`, `zoo.optimizers`); the model trains on
the raw weights. `ValidateAveragedWeights` puts the average into the model for each
validation and keeps it there through the epoch-end callbacks that read the model (the best
checkpoint saves the averaged weights), then puts the raw weights back before the backup, so
backups and resumed runs train on exactly the weights they would have without averaging.
The swap is exact (no arithmetic on the values) and per device under a `tf.distribute`
strategy.
"""

from __future__ import annotations

from typing import Any

import keras


def averaging_optimizer(optimizer: Any) -> Any:
    """The optimizer holding the moving average (inside a loss-scale wrapper), or None."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    if getattr(inner, "use_ema", False) and hasattr(inner, "_model_variables_moving_average"):
        return inner
    return None


def swap_averaged_weights(optimizer: Any) -> None:
    """Exchange the trainable weights with their moving averages (calling it twice undoes it)."""
    import tensorflow as tf  # the zoo trains on the TensorFlow backend

    opt = averaging_optimizer(optimizer)
    if opt is None:
        raise ValueError("swap_averaged_weights needs an optimizer built with use_ema=True")
    strategy = getattr(opt, "_distribution_strategy", None) or tf.distribute.get_strategy()

    def exchange(var: Any, average: Any) -> None:
        kept = tf.identity(var)
        with tf.control_dependencies([kept]):
            var.assign(average)
        average.assign(kept)

    for var, average in zip(opt._trainable_variables, opt._model_variables_moving_average):
        if average is None:
            continue
        var_value = var.value if isinstance(var, keras.Variable) else var
        avg_value = average.value if isinstance(average, keras.Variable) else average
        strategy.extended.update(var_value, exchange, args=(avg_value,), group=False)


class ValidateAveragedWeights(keras.callbacks.Callback):
    """Validate on the averaged weights; the raw ones are back before the backup.

    Place it after the callbacks that read the validated model at the epoch end (best
    checkpoint, early stopping, logs) and before the backup.
    """

    def __init__(self) -> None:
        super().__init__()
        self.swapped = False

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        if not self.swapped:
            swap_averaged_weights(self.model.optimizer)
            self.swapped = True

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.restore()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self.restore()  # a stop between validation and the epoch end

    def restore(self) -> None:
        if self.swapped:
            swap_averaged_weights(self.model.optimizer)
            self.swapped = False
