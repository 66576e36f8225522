"""Fault tolerance for training runs: resumable backups, the NaN/Inf guard, Ctrl-C handling.

A backup is one `.npz` file per saved step in `<run_dir>/backup/` holding every variable of the
training model (weights, BatchNorm statistics, dropout seed-generator states, metric
accumulators) and of the optimizer (its `iterations` counter included), plus a JSON record of the
epoch history and callback state. The data stream depends only on (seed, global step), so
resuming rebuilds it with `start_step=<saved step>`, finishes the partial epoch, and goes on: the
result equals an uninterrupted run bit for bit (conditions in docs/reliability.md).

Files are written to a temporary name, flushed to disk and renamed, so a kill never leaves a
half-written backup in place of a good one; the newest two are kept and a damaged newest one
falls back to the previous (with a warning). Nothing non-finite is ever written.

Test hook: `ZOO_TEST_FAULT=KILL@7` (or `INT@7`) sends SIGKILL (SIGINT) to the training process
right after global step 7 and its callbacks; the reliability tests use it to kill runs at a
chosen step. Unset in normal use.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

log = logging.getLogger("zoo")

BACKUP_DIR = "backup"
KEEP = 2
FAULT_ENV = "ZOO_TEST_FAULT"
_NAME = re.compile(r"^step-(\d{9})\.npz$")
# Callback attributes a resumed run gets back (EarlyStopping resets them in on_train_begin).
_CALLBACK_STATE = {
    "BestModelCheckpoint": ("best", "best_epoch"),
    "EarlyStopping": ("wait", "best", "best_epoch", "stopped_epoch"),
}
# Keys that may differ between the run that wrote a backup and the run resuming it.
_IGNORED_KEYS = (
    "trainer.resume",
    "trainer.verbose",
    "trainer.tensorboard",
    "trainer.num_overlays",
    "trainer.backup_every_steps",
)


class NonFiniteError(FloatingPointError):
    """The loss or a weight became NaN/Inf; nothing was saved after it."""


class BackupError(RuntimeError):
    """No usable backup where one was required, or a backup that does not fit the model."""


@dataclass
class Backup:
    """One loaded backup: the global step, its variables and its JSON record."""

    path: Path
    step: int
    arrays: list[np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def history(self) -> dict[str, list[float]]:
        return self.meta.get("history", {})

    @property
    def epochs_done(self) -> int:
        return len(self.history.get("loss", []))


# --- Variables ------------------------------------------------------------------------------


def tracked_variables(train_model: keras.Model) -> list[Any]:
    """Every variable whose value a resumed run needs, in a stable order, without duplicates.

    The optimizer must be built first (`build_optimizer_state`), or its slots would be missing.
    """
    seen: set[int] = set()
    out = []
    groups = (train_model.variables, train_model.optimizer.variables, train_model.metrics_variables)
    for group in groups:
        for v in group:
            if id(v) not in seen:
                seen.add(id(v))
                out.append(v)
    return out


def build_optimizer_state(train_model: keras.Model) -> None:
    """Create the optimizer slots now (call inside the strategy scope) so they can be restored."""
    if not train_model.optimizer.built:
        train_model.optimizer.build(train_model.trainable_variables)


def restore_variables(variables: list[Any], backup: Backup) -> None:
    """Assign a backup's arrays to `variables`; a mismatch means another model or config."""
    names = backup.meta.get("variables", [])
    if len(backup.arrays) != len(variables):
        raise BackupError(
            f"Backup {backup.path} holds {len(backup.arrays)} variables, this model has "
            f"{len(variables)}: it was written for a different model/optimizer config"
        )
    for i, (v, a) in enumerate(zip(variables, backup.arrays)):
        if tuple(v.shape) != a.shape:
            name = names[i] if i < len(names) else v.path
            raise BackupError(
                f"Backup {backup.path}: variable {name} has shape {a.shape}, the model expects "
                f"{tuple(v.shape)}: it was written for a different model config"
            )
        v.assign(a)


def all_finite(arrays: list[np.ndarray]) -> bool:
    return all(np.all(np.isfinite(a)) for a in arrays if np.issubdtype(a.dtype, np.inexact))


# --- Files ----------------------------------------------------------------------------------


def backup_path(backup_dir: Path, step: int) -> Path:
    return Path(backup_dir) / f"step-{step:09d}.npz"


def list_backups(backup_dir: str | os.PathLike) -> list[Path]:
    """Backup files in `backup_dir`, newest (highest step) first."""
    d = Path(backup_dir)
    if not d.is_dir():
        return []
    return sorted((p for p in d.iterdir() if _NAME.match(p.name)), reverse=True)


def read_value(variable: Any) -> np.ndarray:
    """A variable's value as NumPy (also for distributed variables: Keras converts, TF reduces).

    Under multi-worker strategies reading a sync-on-read variable is a collective, so every
    worker must read the same variables in the same order.
    """
    return np.asarray(keras.ops.convert_to_numpy(variable))


def write_backup(
    backup_dir: str | os.PathLike, step: int, variables: list[Any], meta: dict[str, Any]
) -> Path:
    """Write one backup atomically (temp file, fsync, rename) and keep only the newest `KEEP`.

    `variables` may be Keras variables or their NumPy values.

    Raises:
        NonFiniteError: a variable holds NaN/Inf; nothing is written.
    """
    names = [getattr(v, "path", f"v{i}") for i, v in enumerate(variables)]
    arrays = [v if isinstance(v, np.ndarray) else read_value(v) for v in variables]
    if not all_finite(arrays):
        raise NonFiniteError(f"Refusing to write a backup at step {step}: non-finite variables")
    meta = {"variables": names, **meta, "step": int(step)}
    payload = {f"v{i:05d}": a for i, a in enumerate(arrays)}
    payload["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    d = Path(backup_dir)
    d.mkdir(parents=True, exist_ok=True)
    path = backup_path(d, step)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **payload)
            f.flush()
            os.fsync(f.fileno())  # the rename must never expose data still in the page cache
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    prune_backups(d, KEEP)
    return path


def prune_backups(backup_dir: str | os.PathLike, keep: int = 1) -> None:
    """Delete all but the newest `keep` backups (a finished run needs one to re-export)."""
    for old in list_backups(backup_dir)[keep:]:
        old.unlink(missing_ok=True)


def read_backup(path: str | os.PathLike) -> Backup:
    """Load and verify one backup (zip CRCs, every array present, finite values)."""
    path = Path(path)
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(data["meta"].tobytes().decode())
        arrays = [data[f"v{i:05d}"] for i in range(len(meta["variables"]))]
    if not all_finite(arrays):
        raise ValueError("non-finite values")
    return Backup(path=path, step=int(meta["step"]), arrays=arrays, meta=meta)


def load_latest(backup_dir: str | os.PathLike) -> Backup | None:
    """The newest readable backup; damaged ones are skipped with a warning.

    Returns None when the folder holds no backup; raises `BackupError` when it holds only
    damaged ones (starting over silently would hide the damage).
    """
    paths = list_backups(backup_dir)
    for path in paths:
        try:
            return read_backup(path)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            log.warning(
                "Backup %s is damaged (%s: %s); trying the previous one",
                path,
                type(err).__name__,
                err,
            )
    if paths:
        raise BackupError(
            f"Every backup in {backup_dir} is damaged; delete the folder to start over"
        )
    return None


def find_resume(resume: str | None, run_dir: Path) -> Backup | None:
    """The backup to continue from: `trainer.resume=<dir>` if given, else this run's own."""
    if resume:
        backup = load_latest(Path(resume) / BACKUP_DIR)
        if backup is None:
            raise BackupError(f"trainer.resume={resume}: no backup in {Path(resume) / BACKUP_DIR}")
        return backup
    return load_latest(run_dir / BACKUP_DIR)


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def warn_config_changes(backup: Backup, config: dict[str, Any]) -> None:
    """Log the config keys that differ from the run that wrote the backup (allowed, but noted)."""
    old, new = _flatten(backup.meta.get("config", {})), _flatten(config)
    changed = sorted(
        k for k in old.keys() | new.keys() if old.get(k) != new.get(k) and k not in _IGNORED_KEYS
    )
    if changed:
        log.warning(
            "Resuming %s with a changed config (%s): the result will differ from an "
            "uninterrupted run",
            backup.path,
            ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed),
        )


def prepare_resume_dir(
    backup: Backup, run_dir: Path, best_path: Path | None, csv_path: Path
) -> None:
    """Bring the run directory's best checkpoint and CSV log in line with the backup.

    Copies them over when resuming from another directory, and cuts CSV rows written after the
    backup (epochs that will be trained again).
    """
    source = backup.path.parent.parent
    if source.resolve() != run_dir.resolve():
        if best_path is not None and (source / best_path.relative_to(run_dir)).is_file():
            best_path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / best_path.relative_to(run_dir), best_path)
        if (source / csv_path.name).is_file():
            shutil.copy2(source / csv_path.name, csv_path)
    if csv_path.is_file():
        lines = csv_path.read_text().splitlines(keepends=True)
        keep = lines[: 1 + backup.epochs_done] if backup.epochs_done else []
        if len(keep) != len(lines):
            from zoo import outputs

            outputs.atomic_write(csv_path, lambda tmp: Path(tmp).write_text("".join(keep)))


# --- Callbacks ------------------------------------------------------------------------------


class NonFiniteGuard(keras.callbacks.Callback):
    """Raise `NonFiniteError` at the first batch whose loss or weights are NaN/Inf.

    Must come first in the callback list: raising (rather than setting `stop_training`, like
    Keras' TerminateOnNaN) ends `fit` before any later callback of that batch can save anything.
    The weight check is one fused reduction over the trainable variables per batch.
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


class BackupCallback(keras.callbacks.Callback):
    """Write a backup at every epoch end (and every `every_steps` steps); keep the run's history.

    Must come last in the callback list so the epoch-end backup records what the other
    callbacks did (best value, early-stopping counters, CSV row).

    Args:
        backup_dir: where to write (`<run_dir>/backup`).
        train_model: the compiled training model.
        steps_per_epoch: Keras steps per epoch (a backup at a multiple of it is an epoch-end one).
        every_steps: also back up mid-epoch every this many steps; None: epoch ends only.
        stateful: callbacks whose state is saved and restored (see `_CALLBACK_STATE`).
        config: the resolved run config, stored to warn about changes on resume.
        resumed: the backup this run continues from, or None.
        write: False on non-chief workers (they train but do not write).
    """

    def __init__(
        self,
        backup_dir: Path,
        train_model: keras.Model,
        steps_per_epoch: int,
        every_steps: int | None,
        stateful: list[keras.callbacks.Callback],
        config: dict[str, Any],
        resumed: Backup | None = None,
        write: bool = True,
    ) -> None:
        super().__init__()
        self.backup_dir = Path(backup_dir)
        self.train_model = train_model
        self.steps_per_epoch = steps_per_epoch
        self.every_steps = every_steps
        self.stateful = stateful
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
        self._pending_metrics = resumed if resumed and resumed.step % steps_per_epoch else None
        self._set_callback_state()

    @property
    def step(self) -> int:
        return int(read_value(self.train_model.optimizer.iterations))

    def _set_callback_state(self) -> None:
        for cb in self.stateful:
            for key, value in self.callback_state.get(type(cb).__name__, {}).items():
                setattr(cb, key, value)

    def _snapshot_callbacks(self) -> None:
        for cb in self.stateful:
            attrs = _CALLBACK_STATE.get(type(cb).__name__, ())
            state = {a: getattr(cb, a) for a in attrs if hasattr(cb, a)}
            self.callback_state[type(cb).__name__] = {k: _plain(v) for k, v in state.items()}

    def save(self) -> Path | None:
        """Back up the current state now (also used after Ctrl-C)."""
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
        }
        path = write_backup(self.backup_dir, step, arrays, meta)
        log.debug("Backup written: %s", path)
        return path

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._set_callback_state()  # after EarlyStopping's own on_train_begin reset

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self._pending_metrics is not None:
            ids = {id(v) for v in self.train_model.metrics_variables}
            for v, a in zip(self.variables, self._pending_metrics.arrays):
                if id(v) in ids:
                    v.assign(a)
            self._pending_metrics = None

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        step = self.step
        # Epoch-end steps are backed up in on_epoch_end, after validation and the other callbacks.
        if (
            self.every_steps
            and step - self.last_step >= self.every_steps
            and step % self.steps_per_epoch
        ):
            self.save()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(np.asarray(value)))
        self._snapshot_callbacks()
        self.stopped = bool(self.train_model.stop_training)
        self.save()

    def save_on_interrupt(self) -> Path | None:
        """After Ctrl-C: back up if steps were done since the last backup in the middle of an epoch.

        A mid-epoch state is consistent (a train step is one uninterruptible call); at an epoch
        boundary the epoch-end work may be half done, so the last epoch-end backup stands.
        """
        step = self.step
        if step > self.last_step and step % self.steps_per_epoch:
            return self.save()
        return None


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    return value


class FaultInjector(keras.callbacks.Callback):
    """Test hook: send a signal to this process right after a given global step (see module doc)."""

    def __init__(self, sig: signal.Signals, step: int) -> None:
        super().__init__()
        self.sig, self.at = sig, step

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if int(read_value(self.model.optimizer.iterations)) == self.at:
            os.kill(os.getpid(), self.sig)


def fault_injector_from_env() -> FaultInjector | None:
    """`ZOO_TEST_FAULT=KILL@<step>` or `INT@<step>`; None when unset."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return None
    match = re.fullmatch(r"(KILL|INT)@(\d+)", spec)
    if not match:
        raise ValueError(f"Invalid {FAULT_ENV}={spec!r}; expected KILL@<step> or INT@<step>")
    return FaultInjector(signal.Signals[f"SIG{match[1]}"], int(match[2]))


# --- Fit ------------------------------------------------------------------------------------


def resumable_fit(
    train_model: keras.Model,
    train_stream: Any,
    *,
    start_step: int,
    epochs: int,
    steps_per_epoch: int,
    stopped: bool = False,
    shard: Any = lambda ds: ds,
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


def interrupted_message(path: Path | None, backup_dir: Path, step: int) -> str:
    where = path or (list_backups(backup_dir)[:1] or [None])[0]
    if where is None:
        return f"Interrupted at step {step}; no backup yet, a rerun starts over."
    return f"Interrupted at step {step}; backup {where}. Rerun the same command to resume."
