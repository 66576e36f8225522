"""Learning curves of the quality matrix as markdown: validation Dice over each run.

`curves_markdown(runs)` shows, for every real dataset, each recipe's runs at one budget as a row
of the validation Dice at the checkpoint reached by each tenth of the run's steps, so a doc can
show why a target was missed (a recipe still climbing, one peaking early and overfitting, or
checkpoints that swing).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

RECIPE_ORDER = ("default", "auto", "baseline")


def at_fractions(curve: Sequence[Sequence[float]], parts: int = 10) -> list[float | None]:
    """Dice of the last checkpoint at or before each of `parts` equal shares of the run's steps.

    Args:
        curve: [step, dice] pairs in step order (the run's validations).
        parts: how many shares (10: at 10%, 20%, ..., 100% of the last step).

    Returns:
        One value per share; None where no checkpoint had been reached yet.

    Example:
        >>> at_fractions([[25, 0.5], [50, 0.7], [100, 0.9]], parts=4)
        [0.5, 0.7, 0.7, 0.9]
    """
    if not curve:
        return [None] * parts
    last = float(curve[-1][0])
    out: list[float | None] = []
    for i in range(1, parts + 1):
        reached = [d for s, d in curve if float(s) <= last * i / parts + 1e-9]
        out.append(float(reached[-1]) if reached else None)
    return out


def curves_markdown(
    runs: Sequence[dict[str, Any]],
    *,
    budget_s: float = 180.0,
    real: Sequence[str] = (),
    parts: int = 10,
) -> str:
    """Markdown tables of the runs' validation curves at `budget_s`, one per dataset in `real`.

    Rows are recipe and seed; columns the validation Dice (x100) at each tenth of the run's
    steps (`at_fractions`), then the run's score (the kept checkpoint, scored at native
    resolution).
    """
    lines: list[str] = []
    for dataset in real:
        rows = [
            r
            for r in runs
            if r.get("dataset") == dataset and r.get("budget_s") == budget_s and r.get("curve")
        ]
        if not rows:
            continue
        rows.sort(
            key=lambda r: (
                RECIPE_ORDER.index(r["recipe"]) if r["recipe"] in RECIPE_ORDER else 99,
                r["seed"],
            )
        )
        head = " | ".join(f"{100 * i // parts}%" for i in range(1, parts + 1))
        lines += [
            f"{dataset}, {budget_s / 60:g} min: validation Dice by share of the run's steps",
            "",
            f"| recipe | seed | steps | {head} | score |",
            "|---|---|---|" + "---|" * (parts + 1),
        ]
        for r in rows:
            cells = " | ".join(
                "-" if v is None else f"{100 * v:.1f}" for v in at_fractions(r["curve"], parts)
            )
            steps = int(r["curve"][-1][0])
            lines.append(
                f"| {r['recipe']} | {r['seed']} | {steps} | {cells} | {100 * r['dice']:.1f} |"
            )
        lines.append("")
    return "\n".join(lines)
