"""Hydra callback for `--multirun` sweeps: check every job first, then a comparison table.

Registered in conf/config.yaml under `hydra.callbacks`. Before the first job it composes and
checks the config of every job of the sweep (`zoo.config.parse`), so a bad value stops the
sweep in a second with one line instead of after hours of earlier jobs. A job that still fails
(bad data, a crash) does not stop the others: train.py records the error in the job's
`error.json`, and the table lists the job as failed. At the end it writes `comparison.md` and
`comparison.json` into the sweep directory (best `val_dice` first).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

COLUMNS = ("val_dice", "val_iou", "train_time_s", "epochs", "params")
ERROR_FILE = "error.json"


def record_failure(job_dir: str | Path, error: BaseException) -> None:
    """Write a failed job's error (one line) where the comparison table finds it."""
    from zoo.outputs import write_json

    line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    write_json(Path(job_dir) / ERROR_FILE, {"error": line, "type": type(error).__name__})


def comparison_table(sweep_dir: str | Path) -> tuple[str, list[dict[str, Any]]]:
    """Markdown table (best val_dice first, failed jobs last) and its rows."""
    rows = []
    for job in sorted(p for p in Path(sweep_dir).iterdir() if p.is_dir()):
        if (job / "metrics.json").is_file():
            metrics = json.loads((job / "metrics.json").read_text())
            status = "ok"
        elif (job / ERROR_FILE).is_file():
            metrics, status = {}, "failed: " + json.loads((job / ERROR_FILE).read_text())["error"]
        else:
            continue
        overrides = job / ".hydra" / "overrides.yaml"
        loss = metrics.get("loss")
        rows.append(
            {
                "run": job.name,
                "model": metrics.get("model") or _override(overrides, "model"),
                "loss": loss
                if isinstance(loss, str)
                else "+".join(map(str, loss or [])) or _override(overrides, "loss"),
                **{c: metrics.get(c) for c in COLUMNS},
                "status": status,
            }
        )
    rows.sort(key=lambda r: -(r["val_dice"] if r["val_dice"] is not None else -1.0))
    header = ["run", "model", "loss", *COLUMNS, "status"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [
            f"{r[h]:.4f}" if isinstance(r[h], float) and h.startswith("val") else str(r[h])
            for h in header
        ]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines) + "\n", rows


def _override(path: Path, key: str) -> str | None:
    """The value a job's overrides give `key` (for failed jobs, which wrote no metrics)."""
    if not path.is_file():
        return None
    import yaml

    for item in yaml.safe_load(path.read_text()) or []:
        if str(item).split("=", 1)[0].lstrip("+~") == key:
            return str(item).split("=", 1)[1]
    return None


def sweep_jobs(config: DictConfig) -> list[list[str]]:
    """The override list of every job of the sweep, as Hydra's basic sweeper expands it."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = config.hydra.sweeper.get("params") or {}
    arguments = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
    parsed = OverridesParser.create().parse_overrides(arguments)
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


class ComparisonTable(Callback):
    """Checks every job before the sweep starts; writes comparison.md / .json at the end."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra import compose

        from zoo.config import parse
        from zoo.errors import UserError
        from zoo.recipe.choices import user_keys_from_overrides

        jobs = sweep_jobs(config)
        for i, overrides in enumerate(jobs):
            try:
                cfg = compose(config_name=config.hydra.job.config_name, overrides=overrides)
                parse(cfg, user_keys_from_overrides(overrides))
            except UserError as err:
                sys.exit(f"Error: sweep job {i} ({' '.join(overrides)}): {err}")
        print(f"Checked the configs of {len(jobs)} sweep jobs")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from zoo.outputs import write_json, write_text

        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.exists():
            return
        table, rows = comparison_table(sweep_dir)
        write_text(sweep_dir / "comparison.md", table)
        write_json(sweep_dir / "comparison.json", {"runs": rows})
        print(f"Comparison of {len(rows)} runs: {sweep_dir / 'comparison.md'}\n{table}")
        failed = [r["run"] for r in rows if r["status"] != "ok"]
        if failed:
            sys.exit(f"Error: {len(failed)} of {len(rows)} sweep jobs failed (runs {failed})")
