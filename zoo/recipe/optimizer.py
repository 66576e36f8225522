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

Schedules estimated at fewer than `MIN_SGD_STEPS` steps stay with AdamW at 2e-3: momentum
0.99 averages over ~100 steps, a large share of a few hundred. Measured at 400 steps
(`trainer.max_steps=400`, the steps a 1-minute MRI plan gets on 2 cores), seeds 0-2: the
3-class MRI 96.99 / 96.71 / 97.26 with AdamW against 96.88 / 96.83 / 96.99 with SGD, the gray
matter 96.21 / 95.47 / 96.84 against 95.90 / 95.93 / 96.38 (medians +0.11 and +0.28 for
AdamW, within the seeds' spread); at 3 minutes (~1,400 real steps, ~800 estimated) SGD was
ahead, above.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

SGD_LEARNING_RATE = 1e-2
SGD_MOMENTUM = 0.99
# Fewer estimated steps (`zoo.recipe.width.cpu_steps`) than this: AdamW. Measured in real
# steps: AdamW ahead at 400 (above) and in 1-minute MRI plans of 400-460 steps on the quality
# table's machine; level on the nuclei at ~600 (an AVX2 emulation: SGD 95.14 against AdamW's
# 95.19) and ~830 (1 minute there: 95.13 / 95.16 / 95.08 against 95.10 / 95.31 / 95.02); SGD
# ahead at ~1,400. (It was 400 while the speed probe's reference made estimates ~1.7x short
# there: those MRI plans counted ~270; `zoo.recipe.probe`.)
MIN_SGD_STEPS = 600


def plan_optimizer(
    choose: Callable[[str, Any, str], None],
    short: bool,
    optimizer: str | None = None,
    steps: int | None = None,
) -> None:
    """Choose `trainer.optimizer`, `trainer.learning_rate` and (SGD) `trainer.momentum`.

    Args:
        choose: records a choice with its reason (`plan_recipe`'s).
        short: a CPU schedule of at most 15 minutes.
        optimizer: the command line's `trainer.optimizer`; None: planned.
        steps: the schedule's estimated steps (`zoo.recipe.width.cpu_steps`); None: unknown
            (another model than the planned U-Net), not counted.
    """
    if optimizer is None:
        few = steps is not None and steps < MIN_SGD_STEPS
        optimizer = "sgd" if short and not few else "adamw"
        if not short:
            why = "AdamW, the default for U-Nets"
        elif few:
            why = (
                f"short CPU schedule of ~{steps} steps (< {MIN_SGD_STEPS}): too few for SGD's "
                "momentum 0.99, AdamW"
            )
        else:
            why = (
                "short CPU schedule: SGD with Nesterov momentum (nnU-Net's), measured above "
                "AdamW on the real sets at 3 minutes"
            )
        choose("trainer.optimizer", optimizer, why)
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
