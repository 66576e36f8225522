"""The callbacks of a training run and their order.

`build_callbacks` returns them in the only order that works, built here rather than left to
convention: the NaN guard first (it raises before any later callback of a bad batch saves
anything), then the time-budget pacer (it decides at a step's end whether the run stops there,
which the others read), then the callbacks that watch metrics and write logs (with
`trainer.ema_momentum` they see the averaged weights, which go back out next), then the backup
(it records what the others did at the epoch end), then the stop-on-signal check (it stops right
after a backup). Callbacks whose state must survive a resume declare it in `state_attributes`;
the backup saves and restores exactly those attributes, under the callback's `state_key`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from zoo import outputs
from zoo.errors import NonFiniteError
from zoo.outputs import to_plain
from zoo.saving import inference_model
from zoo.training.averaging import ValidateAveragedWeights
from zoo.training.backup import Backup, list_backups, read_value, tracked_variables, write_backup
from zoo.training.precise_bn import PreciseBatchNorm
from zoo.training.signals import Interrupted, StopRequests

log = logging.getLogger("zoo")


class NonFiniteGuard(keras.callbacks.Callback):
    """Raise `NonFiniteError` at the first batch whose loss or weights are NaN/Inf.

    Raising (rather than setting `stop_training`, like Keras' TerminateOnNaN) ends `fit` before
    any later callback of that batch can save anything. The weight check is one fused reduction
    over the trainable variables per batch.
    """

    def __init__(self) -> None:
        super().__init__()
        self._check = None

    def _weights_finite(self) -> bool:
        if self._check is None:
            import tensorflow as tf

            variables = list(self.model.trainable_variables)

            @tf.function
            def check() -> Any:
                return tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in variables])

            self._check = check
        return bool(self._check())

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        step = int(read_value(self.model.optimizer.iterations))
        loss = (logs or {}).get("loss")
        if loss is not None and not np.all(np.isfinite(np.asarray(loss))):
            raise NonFiniteError(
                f"Training stopped at step {step}: the loss is {float(np.asarray(loss))}; "
                "nothing was saved after the last good backup (lower trainer.learning_rate or set "
                "trainer.clipnorm; see docs/reliability.md)"
            )
        if not self._weights_finite():
            raise NonFiniteError(
                f"Training stopped at step {step}: the weights became NaN/Inf; nothing was saved "
                "after the last good backup (see docs/reliability.md)"
            )


class BestModelCheckpoint(keras.callbacks.Callback):
    """Save the bare inference model whenever the monitored value improves (atomically).

    Keras' ModelCheckpoint would save the training model with its loss inputs; users want the
    model that takes images. Non-finite weights are never saved.
    """

    state_key = "BestModelCheckpoint"
    state_attributes = ("best", "best_epoch")

    def __init__(self, model: keras.Model, path: Path, monitor: str, mode: str) -> None:
        super().__init__()
        self.inference_model = model
        self._saved: keras.Model | None = None  # the single-output copy (deep supervision)
        self.path = Path(path)
        self.monitor = monitor
        self.better = np.greater if mode == "max" else np.less
        self.best = -np.inf if mode == "max" else np.inf
        self.best_epoch: int | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        value = (logs or {}).get(self.monitor)
        if value is None or not np.isfinite(value) or not self.better(value, self.best):
            return
        # A deep-supervised model is saved as its single-output inference model.
        self._saved = inference_model(self.inference_model, self._saved)
        try:
            outputs.save_model(self._saved, self.path)
        except FloatingPointError:
            return  # non-finite weights are never saved; the guard reports them
        self.best, self.best_epoch = float(value), epoch


class EarlyStopping(keras.callbacks.EarlyStopping):
    """Keras' EarlyStopping whose counters survive a resume."""

    state_key = "EarlyStopping"
    state_attributes = ("wait", "best", "best_epoch", "stopped_epoch")


class BackupCallback(keras.callbacks.Callback):
    """Write a backup at every epoch end (and every `every_steps` steps); keep the run's history.

    Args:
        backup_dir: where to write (`<run_dir>/backup`).
        train_model: the compiled training model.
        length: the run's `zoo.training.length.TrainingLength` (`length.epoch_end(step)`: the
            steps at which a Keras epoch ends); an int is read as a fixed steps per epoch.
        every_steps: also back up mid-epoch every this many steps; None: epoch ends only.
        stateful: callbacks whose `state_attributes` are saved and restored.
        config: the resolved run config, stored to compare on resume.
        resumed: the backup this run continues from, or None.
        write: False on non-chief workers (they read the variables with the others, which may
            be a collective, but do not write).
        extras: more JSON records computed when a backup is written, {name: f(step)} (the time
            budget's state: `meta["budget"]`).
    """

    def __init__(
        self,
        backup_dir: Path,
        train_model: keras.Model,
        length: Any,
        every_steps: int | None,
        stateful: list[keras.callbacks.Callback],
        config: dict[str, Any],
        resumed: Backup | None = None,
        write: bool = True,
        extras: dict[str, Callable[[int], Any]] | None = None,
    ) -> None:
        super().__init__()
        self.backup_dir = Path(backup_dir)
        self.train_model = train_model
        if isinstance(length, int):
            from zoo.training.length import TrainingLength

            length = TrainingLength("epochs", length, None)
        self.length = length
        self.every_steps = every_steps
        self.extras = dict(extras or {})
        self.stateful = [cb for cb in stateful if getattr(cb, "state_attributes", ())]
        self.config = config
        self.write = write
        self.variables = tracked_variables(train_model)
        self.history: dict[str, list[float]] = {
            k: list(v) for k, v in (resumed.history if resumed else {}).items()
        }
        self.callback_state: dict[str, dict[str, Any]] = (
            dict(resumed.meta.get("callbacks", {})) if resumed else {}
        )
        self.stopped = bool(resumed.meta.get("stopped", False)) if resumed else False
        self.last_step = resumed.step if resumed else 0
        # Metric accumulators of a partial epoch: fit resets them at epoch begin, we put them back.
        # Decided at the first epoch begin: a budget run learns its interval after this.
        self._pending_metrics = resumed
        self._set_callback_state()

    @property
    def step(self) -> int:
        return int(read_value(self.train_model.optimizer.iterations))

    def _set_callback_state(self) -> None:
        for cb in self.stateful:
            for key, value in self.callback_state.get(cb.state_key, {}).items():
                setattr(cb, key, value)

    def _snapshot_callbacks(self) -> None:
        for cb in self.stateful:
            state = {a: to_plain(getattr(cb, a)) for a in cb.state_attributes if hasattr(cb, a)}
            self.callback_state[cb.state_key] = state

    def save(self) -> Path | None:
        """Back up the current state now; returns the file (None on non-chief workers)."""
        step = self.step
        self.last_step = step
        arrays = [read_value(v) for v in self.variables]  # on every worker: may be collective
        if not self.write:
            return None
        meta = {
            "variables": [v.path for v in self.variables],
            "history": self.history,
            "callbacks": self.callback_state,
            "stopped": self.stopped,
            "config": self.config,
            **{name: extra(step) for name, extra in self.extras.items()},
        }
        path = write_backup(self.backup_dir, step, arrays, meta)
        log.debug("Backup written: %s", path)
        return path

    def latest(self) -> Path | None:
        return (list_backups(self.backup_dir)[:1] or [None])[0]

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._set_callback_state()  # after EarlyStopping's own on_train_begin reset

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        resumed, self._pending_metrics = self._pending_metrics, None
        if resumed is not None and not self.length.epoch_end(resumed.step):
            ids = {id(v) for v in self.train_model.metrics_variables}
            for v, a in zip(self.variables, resumed.arrays):
                if id(v) in ids:
                    v.assign(a)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        step = self.step
        # Epoch-end steps are backed up in on_epoch_end, after validation and the other callbacks.
        if (
            self.every_steps
            and step - self.last_step >= self.every_steps
            and not self.length.epoch_end(step)
        ):
            self.save()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(np.asarray(value)))
        self._snapshot_callbacks()
        self.stopped = bool(self.train_model.stop_training)
        self.save()


class StopOnSignal(keras.callbacks.Callback):
    """Stop at the next step boundary after SIGINT/SIGTERM, right after a backup.

    Mid-epoch the state after a step is consistent, so it backs up and raises `Interrupted`
    there. At the last step of an epoch it waits for the epoch end (validation, the other
    callbacks, the epoch-end backup) so the backup is a whole epoch. Under multi-worker
    strategies the workers agree (`agree`, a max over workers) on whether a signal arrived, so
    all of them stop at the same step, even when only one was signalled.
    """

    def __init__(
        self,
        requests: StopRequests,
        backup: BackupCallback,
        agree: Callable[[int], int] = lambda signum: signum,
    ) -> None:
        super().__init__()
        self.requests, self.backup, self.agree = requests, backup, agree

    def _requested(self) -> int:
        return int(self.agree(int(self.requests.signum or 0)))

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        signum = self._requested()
        step = self.backup.step
        if signum and not self.backup.length.epoch_end(step):
            path = self.backup.save() if step > self.backup.last_step else self.backup.latest()
            raise Interrupted(signum, step, path)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        signum = self._requested()
        if signum:
            raise Interrupted(signum, self.backup.step, self.backup.latest())


@dataclass
class RunCallbacks:
    """The callbacks of a run by role; `ordered()` is the list `fit` gets."""

    guard: NonFiniteGuard | None
    monitors: list[keras.callbacks.Callback]
    backup: BackupCallback
    stop: StopOnSignal
    best: BestModelCheckpoint | None = None
    extra: list[keras.callbacks.Callback] = field(default_factory=list)
    pacer: keras.callbacks.Callback | None = None  # zoo.training.budget.BudgetCallback
    averaged: ValidateAveragedWeights | None = None  # trainer.ema_momentum
    precise: keras.callbacks.Callback | None = None  # trainer.precise_bn_batches

    def ordered(self) -> list[keras.callbacks.Callback]:
        first = [cb for cb in (self.guard, self.pacer) if cb is not None]
        # The monitors read the averaged weights; the backup must see the raw ones.
        # Batch-norm statistics are measured for the (averaged) weights being validated.
        averaged = [cb for cb in (self.averaged, self.precise) if cb is not None]
        return [*first, *self.monitors, *averaged, self.backup, *self.extra, self.stop]


def build_callbacks(
    trainer: Any,
    model: keras.Model,
    train_model: keras.Model,
    *,
    out_dir: Path,
    backup_dir: Path,
    has_val: bool,
    length: Any,
    config: dict[str, Any],
    resumed: Backup | None,
    chief: bool,
    requests: StopRequests,
    agree: Callable[[int], int],
    train_batches: Callable[[], Any] | None = None,
) -> RunCallbacks:
    """The callbacks of a run, from `trainer` (a `zoo.config.TrainerConfig`).

    Args:
        trainer: the trainer options.
        model: the inference model (what the best checkpoint saves).
        train_model: the compiled training model (what the backup saves).
        out_dir: this worker's output folder (the run directory on the chief).
        backup_dir: the run's backup folder.
        has_val: whether there is validation data (best checkpoint, early stopping).
        length: the run's `zoo.training.length.TrainingLength` (where the epochs end).
        config: the resolved run config (stored in backups).
        resumed: the backup the run continues from, or None.
        chief: whether this worker writes backups.
        requests: the signal recorder the stop check reads.
        agree: combines the workers' signal flags (identity on one worker).
        train_batches: returns a stream of training batches (`trainer.precise_bn_batches`).
    """
    monitors: list[keras.callbacks.Callback] = []
    best = None
    if has_val:
        best = BestModelCheckpoint(
            model, out_dir / "checkpoints" / "best.keras", trainer.monitor, trainer.monitor_mode
        )
        monitors.append(best)
        if trainer.early_stopping_patience:
            monitors.append(
                EarlyStopping(
                    monitor=trainer.monitor,
                    mode=trainer.monitor_mode,
                    patience=trainer.early_stopping_patience,
                )
            )
    # A fresh run starts a new log; a resumed one continues the log cut back to its backup.
    monitors.append(
        keras.callbacks.CSVLogger(str(out_dir / "train_log.csv"), append=resumed is not None)
    )
    if trainer.tensorboard:
        monitors.append(
            keras.callbacks.TensorBoard(log_dir=str(out_dir / "tensorboard"), write_graph=False)
        )
    backup = BackupCallback(
        backup_dir,
        train_model,
        length,
        trainer.backup_every_steps,
        stateful=monitors,
        config=config,
        resumed=resumed,
        write=chief,
    )
    return RunCallbacks(
        guard=NonFiniteGuard() if trainer.nan_guard else None,
        monitors=monitors,
        backup=backup,
        stop=StopOnSignal(requests, backup, agree),
        best=best,
        averaged=ValidateAveragedWeights() if trainer.ema_momentum is not None else None,
        precise=PreciseBatchNorm(model, train_batches, trainer.precise_bn_batches)
        if has_val and trainer.precise_bn_batches and train_batches is not None
        else None,
    )
