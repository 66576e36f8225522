"""Which backup a run continues from, and whether the run directory may be continued at all.

`find_resume` picks the backup (`trainer.resume=<dir>`, else the run directory's own);
`check_continuation` refuses what would silently mix two runs (a finished run re-exported with
another config); `prepare_resume_dir` brings the best checkpoint and the CSV log in line with
the backup.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from zoo.errors import BackupError, OutputError
from zoo.outputs import write_text
from zoo.training.backup import BACKUP_DIR, Backup, load_latest

log = logging.getLogger("zoo")

# Keys that may differ between the run that wrote a backup and the run continuing it without
# changing what is trained.
COSMETIC_KEYS = (
    "trainer.resume",
    "trainer.verbose",
    "trainer.tensorboard",
    "trainer.num_overlays",
    "trainer.backup_every_steps",
    "trainer.export",  # what is written after training (a rerun of a finished run re-exports)
)


def find_resume(resume: str | None, run_dir: Path) -> Backup | None:
    """The backup to continue from: `trainer.resume=<dir>` if given, else this run's own.

    Raises:
        BackupError: `resume` names a folder without a backup (or with damaged ones only).
    """
    if resume:
        folder = Path(resume).expanduser()
        backup = load_latest(folder / BACKUP_DIR)
        if backup is None:
            raise BackupError(
                f"trainer.resume={resume}: no backup in {folder / BACKUP_DIR}; name the "
                "directory of a run of train.py (it holds backup/step-*.npz)"
            )
        return backup
    return load_latest(run_dir / BACKUP_DIR)


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Flattened keys whose values differ, without the cosmetic ones: {key: (old, new)}."""
    a, b = _flatten(old), _flatten(new)
    return {
        k: (a.get(k), b.get(k))
        for k in sorted(a.keys() | b.keys())
        if a.get(k) != b.get(k) and k not in COSMETIC_KEYS
    }


def _describe(changes: dict[str, tuple[Any, Any]], limit: int = 4) -> str:
    items = [f"{k}: {o!r} -> {n!r}" for k, (o, n) in changes.items()]
    more = f", and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def is_finished(backup: Backup, epochs: int | None, max_steps: int | None = None) -> bool:
    """True when the backup's run trained all `epochs` or `max_steps`, or was stopped (early
    stopping, or its time budget ended it)."""
    if backup.meta.get("stopped"):
        return True
    if epochs is not None and backup.epochs_done >= epochs:
        return True
    return max_steps is not None and backup.step >= max_steps


def check_continuation(
    backup: Backup,
    config: dict[str, Any],
    epochs: int | None,
    run_dir: Path,
    max_steps: int | None = None,
) -> None:
    """Refuse to re-export a finished run with another config; warn about other changes.

    A finished run rerun with the same config only re-evaluates and re-exports (from its
    backup); with more `trainer.epochs` (or `trainer.max_steps`) it trains on. `epochs` is the
    run's epoch count when epochs decide its length (None otherwise). With any other change
    its outputs would
    describe a model trained on something else, so the run stops with one line saying what to
    do instead.

    Raises:
        OutputError: a finished run and a changed config.
    """
    changes = config_changes(backup.config, config)
    if is_finished(backup, epochs, max_steps):
        changes.pop("trainer.epochs", None)
        changes.pop("trainer.max_steps", None)
        if changes:
            raise OutputError(
                f"{run_dir} holds a finished run trained with another config "
                f"({_describe(changes)}); "
                "pick a new hydra.run.dir, or score its model on other data with mode=evaluate "
                f"checkpoint={run_dir / 'model.keras'}"
            )
        return
    if changes:
        log.warning(
            "Resuming %s with a changed config (%s): the result will differ from an "
            "uninterrupted run",
            backup.path,
            _describe(changes, limit=100),
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
            write_text(csv_path, "".join(keep))
