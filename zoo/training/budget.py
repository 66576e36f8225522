"""A time budget in the training loop: `BudgetCallback` times the warm-up steps, plans with
`zoo.recipe.BudgetController`, sets the learning-rate schedule's length, re-plans from each
measured validation and stops the run on time, identically on every worker."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import keras

from zoo.recipe.budget import (
    FORWARD_COST_RATIO,
    BudgetController,
    BudgetError,
    BudgetPlan,
    format_duration,
    step_time_from,
)
from zoo.training.backup import read_value
from zoo.training.length import TrainingLength

log = logging.getLogger("zoo")

TIMING_STEPS = 5  # warm-up steps timed before a budget is planned (the first one traces)
MIN_RATE_STEPS = 10  # steps since the plan before their mean time replaces the warm-up's
TAIL_EXPORT_S = 5.0  # expected model export, overlays and exit after the final evaluation
# trainer.export: expected seconds per artifact (conversion and verification), about 1.3x what
# the default U-Net (24M parameters) took on 2 CPU cores: 5 s, 31 s and 13 s.
ARTIFACT_EXPORT_S = {"saved_model": 10.0, "onnx": 40.0, "litert": 20.0}
TAIL_FACTOR = 1.2  # the final evaluation costs about a validation (fresh trace included)
# An epoch end's checkpoint and backup writes before one is measured: weights, two Adam slots and
# the checkpoint (~16 bytes a parameter) at ~200 MB/s, plus a fixed cost.
EPOCH_END_FIXED_S = 0.3
EPOCH_END_BYTES_PER_S = 200e6


def epoch_end_estimate(params: int) -> float:
    """Seconds of an epoch end's writes for a model of `params` parameters (a prior)."""
    return EPOCH_END_FIXED_S + 16 * int(params) / EPOCH_END_BYTES_PER_S


def CLOCK() -> float:  # noqa: N802 (module-level clock: tests may replace it)
    return time.monotonic()


class BudgetCallback(keras.callbacks.Callback):
    """Time the warm-up steps, plan the run with a `BudgetController`, stop it on time.

    Place it right after the NaN guard (before the callbacks that read `stop_training` at the
    epoch end). It fills in `length.interval` / `length.total`, sets the learning-rate schedule's
    length (`zoo.recipe.BudgetCosineDecay.set_length`), re-plans from each measured validation
    (its checkpoint and backup writes included) and stops the run at the planned step or the
    deadline. Under a multi-worker strategy every decision goes through `agree` (a max over
    workers), so all workers plan, validate and stop at the same steps.

    Args:
        controller: the budget controller (fresh, or `BudgetController.resume`).
        length: the run's `TrainingLength` (kind "budget").
        schedule: the optimizer's `BudgetCosineDecay`, or None (constant learning rate).
        val_batches: validation batches (to estimate a validation before one is measured).
        max_steps: an upper bound of the total steps (`trainer.max_steps`), or None.
        fixed_interval: a validation interval that must be kept (`val_every_steps`, or the
            interval of the resumed run, which the Keras epochs are aligned to).
        agree: combines an int over workers (max); the identity on one worker.
        clock: monotonic seconds (the controller's clock).
        timing_steps: steps timed before planning.
        epoch_end_s: the checkpoint + backup writes of an epoch end before one is measured
            (None: `epoch_end_estimate` of the model's parameters).
        tail_export_s: expected seconds after the final evaluation (model.keras, the
            `trainer.export` artifacts, overlays, exit).
        final_views: the views the final evaluation averages per image (its test-time
            augmentation; 1 without), each costing about a validation's forward passes.
    """

    def __init__(
        self,
        controller: BudgetController,
        length: TrainingLength,
        *,
        schedule: Any = None,
        val_batches: int = 0,
        max_steps: int | None = None,
        fixed_interval: int | None = None,
        agree: Callable[[int], int] = int,
        clock: Callable[[], float] = lambda: CLOCK(),
        timing_steps: int = TIMING_STEPS,
        epoch_end_s: float | None = None,
        tail_export_s: float = TAIL_EXPORT_S,
        final_views: int = 1,
    ) -> None:
        super().__init__()
        self.ctl, self.length, self.schedule = controller, length, schedule
        self.val_batches, self.max_steps = int(val_batches), max_steps
        self.fixed_interval = fixed_interval
        self.agree, self.clock, self.timing_steps = agree, clock, max(1, int(timing_steps))
        self.epoch_end_s = epoch_end_s
        self.tail_export_s = float(tail_export_s)
        self.final_views = max(1, int(final_views))
        self.times: list[float] = []
        self.validation_costs: list[float] = []
        self._last: float | None = None  # clock at the last step's end
        self._last_step: int | None = None
        self._epoch_end_at: float | None = None
        self._segment = False
        self._out_of_time = False  # a resumed run found its budget spent
        self.used_s: float | None = None  # training seconds (all sessions) when fit ended
        self._run_s, self._run_steps = 0.0, 0  # step time and steps since the plan

    # ------------------------------------------------------------------ helpers
    def _step(self) -> int:
        return int(read_value(self.model.optimizer.iterations))

    def _min(self, value: int) -> int:
        return -int(self.agree(-int(value)))

    def _apply(self, plan: BudgetPlan, step: int) -> None:
        """Make the plan identical on every worker and put it into effect."""
        total = plan.total_steps
        if self.max_steps:
            total = min(total, int(self.max_steps))
        interval = self.fixed_interval or plan.validation_every
        total, interval = self._min(total), int(self.agree(int(interval)))
        plan.total_steps = plan.schedule_steps = total
        plan.validation_every = interval
        plan.lr_warmup_steps = min(plan.lr_warmup_steps, max(total - 1, 0))
        self.length.total, self.length.interval = total, interval
        if self.schedule is not None and (
            self.schedule.total_steps != total or self.schedule.warmup_steps != plan.lr_warmup_steps
        ):
            self.schedule.set_length(total, plan.lr_warmup_steps, at_step=step)

    def _plan(self, step: int, now: float) -> None:
        error: BudgetError | None = None
        try:
            # A validation: forward passes plus the checkpoint and backup writes.
            t = step_time_from(self.times)
            writes = self.epoch_end_s
            if writes is None:
                writes = epoch_end_estimate(self.model.count_params())
            val_s = FORWARD_COST_RATIO * t * self.val_batches + writes
            plan = self.ctl.on_warmup_done(self.times, val_time_s=val_s, steps_done=step, now=now)
        except BudgetError as err:
            error = err
        if int(self.agree(int(error is not None))):
            if self.ctl.elapsed_before > 0:  # a resumed run: what it trained is kept
                log.warning(
                    "The time budget ran out while the resumed run timed its steps (%s); "
                    "stopping at step %d",
                    error or "on another worker", step,
                )  # fmt: skip
                self._out_of_time = True
                return
            raise error or BudgetError(
                f"trainer.time_budget={format_duration(self.ctl.budget_s)} is too short for "
                "another worker of this run"
            )
        self._apply(plan, step)
        log.info(
            "Budget %s: %.3g s/step -> %d steps in all, validation every %d steps, learning-rate "
            "schedule %d steps (warm-up %d)",
            format_duration(self.ctl.budget_s), plan.step_time_s, plan.total_steps,
            plan.validation_every, plan.schedule_steps, plan.lr_warmup_steps,
        )  # fmt: skip

    def _validation_done(self, cost: float, step: int) -> None:
        """A validation (and the epoch-end writes) took `cost` seconds: re-plan from it."""
        self.validation_costs.append(cost)
        final = TAIL_FACTOR * self.final_views * max(self.validation_costs)
        self.ctl.set_tail_estimate(final + self.tail_export_s)
        # The first validation of a session traces the evaluation: a one-off, not the rate.
        if len(self.validation_costs) >= 2 and self.ctl.plan is not None:
            rate = None
            if self._run_steps >= MIN_RATE_STEPS:
                rate = self._run_s / self._run_steps
            self._apply(self.ctl.on_validation_done(cost, step, step_time_s=rate), step)

    # ------------------------------------------------------------------ Keras hooks
    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        now = self.clock()
        if self.ctl.started_at is None:
            self.ctl.start(now)
        self._last, self._last_step = now, self._step()

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self._epoch_end_at is not None:
            now = self.clock()
            cost, self._epoch_end_at = now - self._epoch_end_at, None
            self._validation_done(cost, self._step())
            self._last = self.clock()  # the next step's time starts here
            self._last_step = self._step()

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        now = self.clock()
        step = self._step()
        if self.ctl.plan is not None and self._last is not None and self._last_step is not None:
            self._run_s += now - self._last
            self._run_steps += max(step - self._last_step, 1)
        if self.ctl.plan is None and not self._out_of_time:
            # Per step, also when a batch-end call covers several (steps_per_execution).
            ran = max(step - self._last_step, 1) if self._last_step is not None else 1
            self.times.append((now - (self._last if self._last is not None else now)) / ran)
            due = len(self.times) >= self.timing_steps or self.ctl.remaining(now) <= 0
            # max_steps under the warm-up: plan now, so that the run stops at max_steps.
            due = due or bool(self.max_steps and step >= int(self.max_steps))
            if int(self.agree(int(due))):  # planning is collective: all workers or none
                self._plan(step, now)  # BudgetError: too short, one line
        self._last, self._last_step = now, step
        stop = self._out_of_time
        if not stop and self.ctl.plan is not None:
            # At an epoch end a validation comes before the next step: count it as spent.
            ahead = self.ctl.plan.val_time_s if self.length.epoch_end(step) else 0.0
            stop = self.ctl.should_stop(step, now + ahead)
        if int(self.agree(int(stop))):
            self.length.stop_at = step
            self.model.stop_training = True
        elif self.length.provisional and self.length.interval and step % self.length.interval == 0:
            # The first interval is planned inside a provisional epoch: end it here.
            self._segment = True
            self.model.stop_training = True
        if self.length.epoch_end(step) or self._segment:
            self._epoch_end_at = self.clock()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self.used_s = self.ctl.elapsed()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self._segment:  # not a stop: the callbacks after this one must not record one
            self._segment = False
            self.model.stop_training = False

    def summary(self) -> dict[str, Any]:
        """What metrics.json records about the budget."""
        plan = self.ctl.plan
        return {
            "budget_s": self.ctl.budget_s,
            "used_s": round(self.used_s if self.used_s is not None else self.ctl.elapsed(), 2),
            "stop": "budget spent" if self._out_of_time else self.ctl.stop_reason,
            "step_time_s": round(plan.step_time_s, 4) if plan else None,
            "validation_s": [round(c, 3) for c in self.validation_costs],
            "plan": plan.as_dict() if plan else None,
        }


def budget_controller(
    budget_s: float,
    state: dict[str, Any] | None,
    *,
    process_start: float | None,
    max_lr_warmup: int,
    clock: Callable[[], float] = lambda: CLOCK(),
) -> BudgetController:
    """A fresh controller, or one continuing the budget state of a backup."""
    kwargs = dict(
        clock=clock,
        warmup_steps=TIMING_STEPS,
        process_start=process_start,
        max_lr_warmup=max_lr_warmup,
    )
    if state:
        return BudgetController.resume(budget_s, state, **kwargs)
    return BudgetController(budget_s, **kwargs)


def resume_budget(length: TrainingLength, state: dict[str, Any] | None, schedule: Any) -> None:
    """Continue a resumed budget run on its interval and learning-rate schedule (the re-plan
    after the warm-up keeps the schedule when it is within 10% of it)."""
    plan = (state or {}).get("plan")
    if not plan:
        return
    length.interval = length.interval or int(plan["validation_every"])
    if schedule is not None and state.get("lr"):
        schedule.restore(state["lr"])
    elif schedule is not None:
        schedule.set_length(int(plan["schedule_steps"]), int(plan["lr_warmup_steps"]))


def budget_state(controller: BudgetController, schedule: Any) -> Callable[[int], dict[str, Any]]:
    """The budget record of a backup at a step: elapsed time, plan and LR schedule."""

    def state(step: int) -> dict[str, Any]:
        out = controller.state(step)
        if schedule is not None:
            out["lr"] = schedule.get_config()
        return out

    return state


def attach_budget(
    run: Any,
    length: TrainingLength,
    callbacks: Any,
    resumed: Any,
    agree: Callable[[int], int],
    val_batches: int,
) -> BudgetCallback | None:
    """The pacer of a budget run (None for other runs), wired into `callbacks` (a
    `RunCallbacks`): its state goes into every backup, a resumed run continues its budget."""
    if length.kind != "budget":
        return None
    t = run.trainer
    state = resumed.meta.get("budget") if resumed is not None else None
    ctl = budget_controller(
        length.budget_s, state, process_start=run.process_start, max_lr_warmup=t.warmup_steps
    )
    tail_export = export_tail_s(t.export)
    ctl.set_tail_estimate(ctl.tail_estimate_s + tail_export - TAIL_EXPORT_S)
    schedule = getattr(callbacks.backup.train_model.optimizer, "_learning_rate", None)
    schedule = schedule if hasattr(schedule, "set_length") else None
    fixed = length.interval  # val_every_steps
    resume_budget(length, state, schedule)
    pacer = BudgetCallback(
        ctl, length, schedule=schedule, val_batches=val_batches, max_steps=t.max_steps,
        fixed_interval=fixed or length.interval, agree=agree, tail_export_s=tail_export,
        final_views=final_views(run),
    )  # fmt: skip
    callbacks.pacer = pacer
    callbacks.backup.extras["budget"] = budget_state(ctl, schedule)
    return pacer


def final_views(run: Any) -> int:
    """Views per image of the final evaluation: the TTA of a full-resolution one (which the
    model records as its own, `zoo.inference.tta`), 1 at image_size."""
    from zoo.inference.tta import TRANSFORMS

    if run.trainer.final_eval != "full_resolution":
        return 1
    return len(TRANSFORMS[run.predict.tta or "none"])  # (checked by the config)


def export_tail_s(export: Any) -> float:
    """Expected seconds after the final evaluation: model.keras and the `trainer.export`
    artifacts (`ARTIFACT_EXPORT_S` each)."""
    from zoo.config.exports import export_requests

    return TAIL_EXPORT_S + sum(ARTIFACT_EXPORT_S[r.format] for r in export_requests(export))


def used_up(pacer: BudgetCallback | None, resumed: bool) -> bool:
    """A resumed budget run whose budget is spent: nothing to train (it re-exports)."""
    return pacer is not None and resumed and pacer.ctl.remaining() <= 0


def mark_startup(timer: Any, process_start: float | None, pacer: BudgetCallback | None) -> None:
    """Training starts now: the budget's clock starts, and the start-up phase (process start to
    here, less the fingerprint) goes into `timer` (a `zoo.recipe.PhaseTimer`)."""
    if pacer is not None and pacer.ctl.started_at is None:
        pacer.ctl.start(pacer.clock())
    if process_start is None:
        return
    spent = timer.clock() - process_start - sum(timer.seconds.values())
    timer.seconds["startup"] = max(spent, 0.0)


def timing(timer: Any, process_start: float | None) -> dict[str, float]:
    """metrics.json "timing": seconds per phase and the total so far."""
    out = timer.as_dict()
    if process_start is not None:
        out["total_s"] = round(timer.clock() - process_start, 3)
    return out


def outcome(
    length: TrainingLength, pacer: BudgetCallback | None, timer: Any, process_start: float | None
) -> dict[str, Any]:
    """What metrics.json records about the run's length, budget and phase times."""
    out: dict[str, Any] = {
        "length": {"kind": length.kind, "total_steps": length.total, "interval": length.interval},
        "timing": timing(timer, process_start),
    }
    if pacer is not None:
        out["budget"] = pacer.summary()
    return out
