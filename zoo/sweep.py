"""Hydra callback: after a multirun, a markdown table comparing the runs' final metrics.

Registered in conf/config.yaml under `hydra.callbacks`; it reads each job's metrics.json and
writes `comparison.md` (and `comparison.json`) into the sweep directory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

COLUMNS = ("val_dice", "val_iou", "train_time_s", "epochs", "params")


def comparison_table(sweep_dir: str | Path) -> tuple[str, list[dict[str, Any]]]:
    """Markdown table (best val_dice first) and rows from each metrics.json below `sweep_dir`."""
    rows = []
    for path in sorted(Path(sweep_dir).glob("*/metrics.json")):
        metrics = json.loads(path.read_text())
        loss = metrics.get("loss")
        rows.append(
            {
                "run": path.parent.name,
                "model": metrics.get("model"),
                "loss": loss if isinstance(loss, str) else "+".join(map(str, loss or [])),
                **{c: metrics.get(c) for c in COLUMNS},
            }
        )
    rows.sort(key=lambda r: -(r["val_dice"] if r["val_dice"] is not None else -1.0))
    header = ["run", "model", "loss", *COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [
            f"{r[h]:.4f}" if isinstance(r[h], float) and h.startswith("val") else str(r[h])
            for h in header
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n", rows


class ComparisonTable(Callback):
    """Writes comparison.md / comparison.json at the end of a multirun."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.exists():
            return
        table, rows = comparison_table(sweep_dir)
        (sweep_dir / "comparison.md").write_text(table)
        (sweep_dir / "comparison.json").write_text(json.dumps(rows, indent=2) + "\n")
        print(f"Comparison of {len(rows)} runs: {sweep_dir / 'comparison.md'}\n{table}")
