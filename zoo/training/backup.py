"""The backup file format: every variable a resumed run needs, one `.npz` file per saved step.

`<run_dir>/backup/step-<global step>.npz` holds every variable of the training model (weights,
BatchNorm statistics, dropout seed-generator states, metric accumulators) and of the optimizer
(its `iterations` counter included), plus a JSON record (`meta`: variable names, epoch history,
callback state, the resolved config). Files are written atomically (`zoo.outputs.atomic_write`);
the newest `KEEP` are kept and a damaged newest one falls back to the previous, with a warning.
Nothing non-finite is ever written.
"""

from __future__ import annotations

import json
import logging
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from zoo.errors import BackupError, NonFiniteError
from zoo.outputs import all_finite, atomic_write

log = logging.getLogger("zoo")

BACKUP_DIR = "backup"
KEEP = 2
_NAME = re.compile(r"^step-(\d{9})\.npz$")


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

    @property
    def config(self) -> dict[str, Any]:
        return self.meta.get("config", {})


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
    """Assign a backup's arrays to `variables`.

    Raises:
        BackupError: the backup was written for another model or optimizer config; the message
            says how to go on.
    """
    names = backup.meta.get("variables", [])
    what_to_do = f"pick a new hydra.run.dir, or delete {backup.path.parent} to start this run over"
    if len(backup.arrays) != len(variables):
        raise BackupError(
            f"The backup {backup.path} holds {len(backup.arrays)} variables and this run's model "
            f"and optimizer have {len(variables)}: it was written with another model or "
            f"optimizer config; {what_to_do}"
        )
    for i, (v, a) in enumerate(zip(variables, backup.arrays)):
        if tuple(v.shape) != a.shape:
            name = names[i] if i < len(names) else v.path
            raise BackupError(
                f"The backup {backup.path} has variable {name} of shape {a.shape}, this run's "
                f"model expects {tuple(v.shape)}: it was written with another model config; "
                f"{what_to_do}"
            )
    for v, a in zip(variables, backup.arrays):
        v.assign(a)


def backup_path(backup_dir: str | os.PathLike, step: int) -> Path:
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
    """Write one backup atomically and keep only the newest `KEEP`.

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

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **payload)

    path = atomic_write(backup_path(backup_dir, step), write)
    prune_backups(backup_dir, KEEP)
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
