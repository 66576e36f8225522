"""How long a run trains and when it validates: epochs, `max_steps` or a time budget.

Keras epochs are the validation intervals: every epoch ends with a validation, the best
checkpoint, a backup and a row of train_log.csv. The training stream is indexed by global step
(`zoo.data.pipeline`), independent of Keras' epochs, so an interval need not be a pass over the
data and a run may end inside one.

    set                   steps                                   validation every
    trainer.time_budget   what fits, from the measured step time  val_every_steps, or planned
    trainer.max_steps     max_steps                               val_every_steps, or ~1/15 run
    trainer.epochs        epochs x interval                       val_every_steps, or one pass
    nothing               4 epochs                                one pass, >= 512 samples

`TrainingLength` is the run's live plan (a budget fills in `interval` and `total` after its
warm-up steps); `zoo.training.fit.fit_length` runs Keras `fit` over it from any global step;
`BudgetCallback` times the steps, plans with `zoo.recipe.BudgetController`, sets the
learning-rate schedule's length and stops the run on time, identically on every worker.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from zoo.config.length import DEFAULT_EPOCHS, MIN_EPOCH_SAMPLES, length_kind
from zoo.recipe.budget import (
    MIN_VALIDATION_INTERVAL,
    VALIDATIONS_TARGET,
    format_duration,
    parse_duration,
)

log = logging.getLogger("zoo")

PROVISIONAL_SCHEDULE = 1000  # LR schedule length before the budget is planned


@dataclass
class TrainingLength:
    """The run's length: steps between validations (a Keras epoch) and the total steps.

    Attributes:
        kind: "epochs", "steps" or "budget".
        interval: steps between validations; None until a budget plans it.
        total: the last global step; None until a budget plans it (a budget may still stop
            earlier, at its deadline: `stop_at`).
        why: one line for the log.
        budget_s: the time budget in seconds (kind "budget").
        stop_at: the step at which the budget stopped the run.
        provisional: True while `fit_length` runs the first epoch before the interval is known.
    """

    kind: str
    interval: int | None
    total: int | None
    why: str = ""
    budget_s: float | None = None
    stop_at: int | None = None
    provisional: bool = False

    def epoch_end(self, step: int) -> bool:
        """Whether global step `step` ends a Keras epoch (a validation and an epoch backup)."""
        if step in (self.stop_at, self.total):
            return True
        return self.interval is not None and step % self.interval == 0

    def is_finished(self, step: int) -> bool:
        return self.total is not None and step >= self.total

    def schedule_steps(self) -> int:
        """The learning-rate schedule's length to build the optimizer with."""
        return self.total if self.total is not None else PROVISIONAL_SCHEDULE


def auto_interval(total: int) -> int:
    """Steps between validations for a run of `total` steps without `val_every_steps`: about
    VALIDATIONS_TARGET validations, never closer than MIN_VALIDATION_INTERVAL steps."""
    return max(1, min(total, max(MIN_VALIDATION_INTERVAL, math.ceil(total / VALIDATIONS_TARGET))))


def plan_length(trainer: Any, steps_per_pass: int, global_batch_size: int) -> TrainingLength:
    """The run's length from the trainer options and the data (before any budget planning).

    Args:
        trainer: a `TrainerConfig` after `zoo.config.length.resolve_length`.
        steps_per_pass: full batches in one pass over the training set.
        global_batch_size: samples per step.
    """
    given = trainer.val_every_steps or trainer.steps_per_epoch
    kind = length_kind(trainer)
    if kind == "budget":
        budget_s = parse_duration(trainer.time_budget)
        cap = f", at most {trainer.max_steps} steps" if trainer.max_steps else ""
        every = f"every {given} steps" if given else "at planned intervals"
        why = f"time budget {format_duration(budget_s)}{cap}; validation {every}"
        return TrainingLength("budget", given, None, why, budget_s=budget_s)
    if kind == "steps":
        total = int(trainer.max_steps)
        interval = int(given) if given else auto_interval(total)
        return TrainingLength("steps", interval, total, f"{total} steps (trainer.max_steps)")
    if trainer.epochs is not None:
        interval = int(given or steps_per_pass)
        epochs, why = int(trainer.epochs), "trainer.epochs"
    else:
        small = math.ceil(MIN_EPOCH_SAMPLES / global_batch_size)
        interval = int(given or max(steps_per_pass, small))
        epochs = DEFAULT_EPOCHS
        why = "the default; set trainer.time_budget, max_steps or epochs"
        if not given and small > steps_per_pass:
            why += f"; epochs of {interval} steps, >= {MIN_EPOCH_SAMPLES} samples"
    total = epochs * interval
    return TrainingLength("epochs", interval, total, f"{epochs} epochs x {interval} steps ({why})")


def finish_rule(trainer: Any) -> tuple[int | None, int | None]:
    """(epochs, max_steps) that mark a backup's run as finished (`resume.is_finished`)."""
    kind = length_kind(trainer)
    epochs = (trainer.epochs or DEFAULT_EPOCHS) if kind == "epochs" else None
    return epochs, trainer.max_steps
