"""Time budgets: parse `trainer.time_budget`, plan the steps that fit, stop on time.

The budget covers the training loop (fit with its validations). Start-up, fingerprinting, the
final evaluation and the export are timed separately (`zoo.recipe.timing.PhaseTimer`); for budgets
of a minute or more the whole process must end within the budget + `PROCESS_SLACK_S`, which
`BudgetController` enforces by also stopping training early enough to leave time for the measured
tail (evaluation + export).

The arithmetic is pure and the controller reads time only through its `clock` (tests use a fake
one). A training loop calls `start()`, times `warmup_steps` steps, calls `on_warmup_done` for a
`BudgetPlan` (steps, LR schedule length, validation interval), then asks `should_validate(step)` /
`should_stop(step)`, and stores `state()` in its backups (`BudgetController.resume` continues).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from zoo.recipe.duration import (  # noqa: F401  (part of this module's API)
    DURATION_FORMS,
    BudgetError,
    format_duration,
    parse_duration,
)

PROCESS_SLACK_S = 30.0  # start-up + fingerprint + final evaluation + export, budgets >= 60 s
SLACK_APPLIES_FROM_S = 60.0
VALIDATIONS_TARGET = 15  # aim for 10-20 validations per run ...
VALIDATIONS_MAX = 20
VAL_COST_FRACTION = 0.10  # ... costing at most 10% of the training time
MIN_VALIDATION_INTERVAL = 10  # steps: fewer would measure noise, not progress
FORWARD_COST_RATIO = 0.4  # a validation batch costs ~1/3 of a training step; 0.4 is conservative
SCHEDULE_KEEP_TOLERANCE = 0.10  # resume keeps the old LR schedule if the new plan is this close


def step_time_from(step_times: Sequence[float]) -> float:
    """Typical seconds per step from warm-up timings: the median, without the first step when
    there are more (it traces the graph and can take 100x longer)."""
    times = [float(t) for t in step_times if t is not None and math.isfinite(t) and t > 0]
    if not times:
        raise BudgetError("No valid warm-up step time was measured (need at least one step > 0 s)")
    return statistics.median(times[1:] if len(times) > 1 else times)


@dataclass
class BudgetPlan:
    """What fits in the budget.

    Attributes:
        budget_s: the whole training budget.
        available_s: training seconds left when the plan was made (after warm-up), after the
            safety margin.
        step_time_s: measured seconds per training step.
        val_time_s: seconds per validation (measured or estimated).
        steps_done: steps already run (warm-up, earlier sessions).
        total_steps: steps of the whole run (including `steps_done`): the loop stops there.
        schedule_steps: length of the learning-rate schedule (normally `total_steps`).
        validation_every: validate every this many steps (and once at the end).
        num_validations: validations the plan expects from now on.
        lr_warmup_steps: learning-rate warm-up steps suited to this length.
        deadline_s: training must stop at this clock time (process-level rule included).
    """

    budget_s: float
    available_s: float
    step_time_s: float
    val_time_s: float
    steps_done: int
    total_steps: int
    schedule_steps: int
    validation_every: int
    num_validations: int
    lr_warmup_steps: int
    deadline_s: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_steps(
    available_s: float,
    step_time_s: float,
    val_time_s: float,
    *,
    steps_done: int = 0,
    max_lr_warmup: int = 50,
    min_interval: int = MIN_VALIDATION_INTERVAL,
) -> tuple[int, int, int, int]:
    """Pure arithmetic: (new steps, validation interval, validations, LR warm-up steps).

    The new steps S and the number of validations N satisfy ``S * t + N * v <= available``. N aims
    at `VALIDATIONS_TARGET` but never costs more than `VAL_COST_FRACTION` of the time, never comes
    more often than every `min_interval` steps, and is at least 1 (the final validation that picks
    the best checkpoint) when anything fits.
    """
    t, v = float(step_time_s), max(float(val_time_s), 0.0)
    if available_s <= 0 or t <= 0:
        return 0, max(min_interval, 1), 0, 0
    n = VALIDATIONS_TARGET
    if v > 0:
        n = min(n, int(VAL_COST_FRACTION * available_s // v))
    n = max(n, 1)
    steps = int((available_s - n * v) // t)
    if steps <= 0:  # the validations themselves do not fit: keep only the final one
        n = 1
        steps = int((available_s - v) // t)
    if steps <= 0:
        return 0, max(min_interval, 1), 0, 0
    interval = max(min_interval, math.ceil(steps / n))
    n = max(1, min(VALIDATIONS_MAX, math.ceil(steps / interval)))
    # Validations dropped by the interval rule give their time back to training.
    steps = int((available_s - n * v) // t)
    interval = max(min_interval, math.ceil(steps / n))
    total = steps_done + steps
    warmup = min(int(max_lr_warmup), max(0, total // 20))
    return steps, interval, n, warmup


class BudgetController:
    """Plans and enforces a training-time budget; the training loop calls it.

    Args:
        budget_s: the training budget in seconds (`parse_duration`).
        clock: monotonic seconds; tests pass a fake one.
        warmup_steps: steps timed before planning (the first one traces the graph).
        process_start: clock time the process started; with budgets >= 60 s the plan keeps the
            process within budget + `PROCESS_SLACK_S` (`tail_estimate_s` reserved for the end).
        tail_estimate_s: expected seconds of the final evaluation + export.
        elapsed_s: training seconds already used (resume), from `state()["elapsed_s"]`.
        steps_done: steps already run (resume).
        previous_plan: the plan of the interrupted session (resume), to keep its LR schedule.
        max_lr_warmup: the configured `trainer.warmup_steps` (an upper bound).
        margin_fraction: share of the remaining time kept free for step-time jitter.
    """

    def __init__(
        self,
        budget_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        warmup_steps: int = 5,
        process_start: float | None = None,
        tail_estimate_s: float = 10.0,
        elapsed_s: float = 0.0,
        steps_done: int = 0,
        previous_plan: Mapping[str, Any] | None = None,
        max_lr_warmup: int = 50,
        margin_fraction: float = 0.02,
    ) -> None:
        self.budget_s = float(budget_s)
        if not self.budget_s > 0:
            raise BudgetError(f"Invalid budget_s={budget_s!r}; expected seconds > 0")
        self.clock = clock
        self.warmup_steps = max(1, int(warmup_steps))
        self.process_start = process_start
        self.tail_estimate_s = float(tail_estimate_s)
        self.elapsed_before = float(elapsed_s)
        self.steps_before = int(steps_done)
        self.previous_plan = dict(previous_plan) if previous_plan else None
        self.max_lr_warmup = int(max_lr_warmup)
        self.margin_fraction = float(margin_fraction)
        self.started_at: float | None = None
        self.plan: BudgetPlan | None = None
        self.stop_reason: str | None = None

    # ----------------------------------------------------------------- resume
    @classmethod
    def resume(cls, budget_s: float, state: Mapping[str, Any], **kwargs: Any) -> BudgetController:
        """A controller continuing from `state()` saved in a backup: the remaining budget is the
        budget minus the training time already used (a new budget given on resume wins)."""
        return cls(
            budget_s,
            elapsed_s=float(state.get("elapsed_s", 0.0)),
            steps_done=int(state.get("steps_done", 0)),
            previous_plan=state.get("plan"),
            **kwargs,
        )

    # ----------------------------------------------------------------- loop hooks
    def start(self, now: float | None = None) -> None:
        """Mark the start of the training loop (after start-up and data/model building)."""
        self.started_at = self.clock() if now is None else float(now)

    def elapsed(self, now: float | None = None) -> float:
        """Training seconds used so far, including earlier sessions."""
        if self.started_at is None:
            return self.elapsed_before
        now = self.clock() if now is None else now
        return self.elapsed_before + max(0.0, now - self.started_at)

    def remaining(self, now: float | None = None) -> float:
        return self.budget_s - self.elapsed(now)

    def _deadline(self) -> float:
        assert self.started_at is not None
        deadline = self.started_at + (self.budget_s - self.elapsed_before)
        if self.process_start is not None and self.budget_s >= SLACK_APPLIES_FROM_S:
            # Whole process within budget + slack: the tail (evaluation, export) must fit too.
            own = self.budget_s - self.elapsed_before  # this session's share of the budget
            hard = self.process_start + own + PROCESS_SLACK_S - self.tail_estimate_s
            deadline = min(deadline, hard)
        return deadline

    def set_tail_estimate(self, seconds: float) -> None:
        """Update the expected final evaluation + export time (e.g. from a measured validation);
        the plan's deadline follows (budgets >= 60 s with a `process_start`)."""
        self.tail_estimate_s = max(float(seconds), 0.0)
        if self.plan is not None and self.started_at is not None:
            self.plan.deadline_s = self._deadline()

    def minimum_budget_s(self, step_time_s: float, val_time_s: float) -> float:
        """The smallest budget that runs the warm-up steps, one more step and one validation."""
        return (self.warmup_steps + 1) * step_time_s + val_time_s

    def on_warmup_done(
        self,
        step_times: Sequence[float],
        *,
        val_time_s: float | None = None,
        val_batches: int | None = None,
        steps_done: int | None = None,
        now: float | None = None,
    ) -> BudgetPlan:
        """Plan the run from the warm-up step times.

        Args:
            step_times: seconds of each warm-up step (the first may include tracing).
            val_time_s: measured seconds of one validation, if known.
            val_batches: else the validation batches, to estimate it from the step time.
            steps_done: steps run so far in total (default: earlier sessions + warm-up).
            now: clock time (default: `clock()`).

        Raises:
            BudgetError: the budget cannot fit a single step after the warm-up plus the final
                validation; the message names the measured times and the least budget that works.
        """
        if self.started_at is None:
            raise RuntimeError("BudgetController.start() must be called before on_warmup_done")
        now = self.clock() if now is None else float(now)
        t = step_time_from(step_times)
        if val_time_s is None:
            val_time_s = FORWARD_COST_RATIO * t * (val_batches or 0)
        v = float(val_time_s)
        done = self.steps_before + len(step_times) if steps_done is None else int(steps_done)
        deadline = self._deadline()
        left = deadline - now
        available = left - max(self.margin_fraction * left, t)  # jitter: 2% or one step
        steps, interval, n, warmup = plan_steps(
            available, t, v, steps_done=done, max_lr_warmup=self.max_lr_warmup
        )
        if steps < 1:
            if self.elapsed_before > 0 and self.remaining(now) <= 0:
                raise BudgetError(
                    f"trainer.time_budget={format_duration(self.budget_s)} is used up: "
                    f"{self.elapsed(now):.0f} s of training already ran; give a larger budget "
                    "to resume"
                )
            # What this run has used, then one step, the final validation and the margin.
            need = (self.budget_s - left) + 2 * t + v
            raise BudgetError(
                f"trainer.time_budget={format_duration(self.budget_s)} is too short: one training "
                f"step takes {t:.2g} s and a validation {v:.2g} s here (after {len(step_times)} "
                f"warm-up steps); give at least {format_duration(math.ceil(need * 1.2))}"
            )
        total = done + steps
        schedule = total
        if self.previous_plan:
            old = int(self.previous_plan.get("schedule_steps", 0))
            # Timing noise between sessions should not bend the LR curve.
            if old > done and abs(total - old) <= SCHEDULE_KEEP_TOLERANCE * old:
                total = schedule = old
            warmup = int(self.previous_plan.get("lr_warmup_steps", warmup))
        self.plan = BudgetPlan(
            budget_s=self.budget_s,
            available_s=round(available, 3),
            step_time_s=t,
            val_time_s=v,
            steps_done=done,
            total_steps=total,
            schedule_steps=schedule,
            validation_every=interval,
            num_validations=n,
            lr_warmup_steps=warmup,
            deadline_s=deadline,
        )
        return self.plan

    def on_validation_done(
        self,
        seconds: float,
        step: int,
        now: float | None = None,
        step_time_s: float | None = None,
    ) -> BudgetPlan:
        """Record a measured validation (with its checkpoint/backup writes) and re-plan.

        The steps still to run are those that fit before the deadline with validations of the
        measured cost at the planned interval, at `step_time_s` per step when given (the rate
        measured since the plan: steps can settle slower than in the warm-up) or the warm-up's;
        the plan's length changes only when it is off by more than SCHEDULE_KEEP_TOLERANCE
        (then update the LR schedule, e.g. `BudgetCosineDecay.set_length(plan.schedule_steps)`),
        so that a schedule is not cut short by the deadline.
        """
        if self.plan is None:
            raise RuntimeError("on_validation_done before on_warmup_done")
        plan, now = self.plan, (self.clock() if now is None else float(now))
        if step_time_s is not None and math.isfinite(step_time_s) and step_time_s > 0:
            plan.step_time_s = float(step_time_s)
        plan.val_time_s = v = max(float(seconds), 0.0)
        t, every = plan.step_time_s, plan.validation_every
        left = plan.deadline_s - now
        available = left - max(self.margin_fraction * left, t)
        fits = max(int(available // t), 0)
        while fits > 0 and fits * t + math.ceil(fits / every) * v > available:
            fits -= max(1, int((fits * t + math.ceil(fits / every) * v - available) // (t + v)))
        total = step + max(fits, 0)
        if abs(total - plan.total_steps) > SCHEDULE_KEEP_TOLERANCE * plan.total_steps:
            plan.total_steps = plan.schedule_steps = max(total, step)
            plan.num_validations = math.ceil(max(fits, 0) / every)
        return plan

    def should_validate(self, step: int) -> bool:
        """Validate after `step` (1-based count of steps done)?"""
        if self.plan is None:
            return False
        return step >= self.plan.total_steps or step % self.plan.validation_every == 0

    def should_stop(self, step: int, now: float | None = None) -> bool:
        """Stop before running step `step + 1`? True at the planned step count, or when the next
        step and the final validation would pass the deadline (steps got slower than measured)."""
        if self.plan is None:
            return False
        if step >= self.plan.total_steps:
            self.stop_reason = "planned steps done"
            return True
        now = self.clock() if now is None else now
        if now + self.plan.step_time_s + self.plan.val_time_s > self.plan.deadline_s:
            self.stop_reason = "deadline"
            return True
        return False

    def state(self, step: int | None = None, now: float | None = None) -> dict[str, Any]:
        """What a backup stores to resume with the right remaining budget."""
        return {
            "budget_s": self.budget_s,
            "elapsed_s": round(self.elapsed(now), 3),
            "steps_done": int(step) if step is not None else self.steps_before,
            "plan": self.plan.as_dict() if self.plan else None,
        }
