"""The planned optimizer and peak learning rate (`plan_recipe`).

Short CPU schedules (a budget of at most 15 minutes) train with SGD, Nesterov momentum 0.99
and a peak learning rate of 1e-2, nnU-Net's optimizer, under the plan's cosine schedule with
its warm-up. Measured at 3 minutes against AdamW at 2e-3 (the plan before, docs/quality.md),
through `recipe=auto` with the override, seed by seed: the nuclei 95.20 / 95.19 / 95.41 /
95.21 / 95.26 against 95.21 / 95.11 / 94.91 / 95.20 / 95.12, the gray matter 97.23 / 97.00 /
97.30 against 97.17 / 96.56 / 97.08, the 3-class MRI 97.59 / 97.52 / 97.41 against 97.34 /
97.41 / 97.48: 11 of 13 seeds higher, medians +0.09 to +0.15 (measured before SGD applied
`trainer.weight_decay`, whose 1e-4 decoupled decay moves a kernel by at most 1e-6 of itself a
step at this peak). Longer and accelerator schedules keep AdamW at 1e-3, not measured
against SGD here. A command line's `trainer.optimizer` keeps its own learning rate rule: SGD
1e-2 with momentum 0.99, AdamW and Adam 2e-3 on short CPU schedules, else 1e-3.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

SGD_LEARNING_RATE = 1e-2
SGD_MOMENTUM = 0.99


def plan_optimizer(
    choose: Callable[[str, Any, str], None], short: bool, optimizer: str | None = None
) -> None:
    """Choose `trainer.optimizer`, `trainer.learning_rate` and (SGD) `trainer.momentum`.

    Args:
        choose: records a choice with its reason (`plan_recipe`'s).
        short: a CPU schedule of at most 15 minutes.
        optimizer: the command line's `trainer.optimizer`; None: planned.
    """
    if optimizer is None:
        optimizer = "sgd" if short else "adamw"
        choose(
            "trainer.optimizer",
            optimizer,
            "short CPU schedule: SGD with Nesterov momentum (nnU-Net's), measured above AdamW "
            "on the real sets at 3 minutes"
            if short
            else "AdamW, the default for U-Nets",
        )
    if optimizer == "sgd":
        choose("trainer.learning_rate", SGD_LEARNING_RATE, "SGD peak, cosine to zero (nnU-Net's)")
        choose("trainer.momentum", SGD_MOMENTUM, "Nesterov momentum 0.99 (nnU-Net's)")
    elif short:
        choose(
            "trainer.learning_rate",
            2e-3,
            "short CPU schedule, cosine to zero: a higher peak converges in fewer steps",
        )
    else:
        choose("trainer.learning_rate", 1e-3, "AdamW default for U-Nets")
