"""How long a run trains: the length rules, and the time budget wired into Keras fit on a fake
clock (tiny Dense model, real callbacks and backups): planned steps, validation interval, LR
schedule length, stop at the plan or the deadline, resume with a partly used budget, the
whole-process rule, and a budget too short for one step. Every expected number below is worked
out by hand from zoo.recipe.budget's arithmetic (the comments show the sums)."""

from __future__ import annotations

import csv
from types import SimpleNamespace

import keras
import numpy as np
import pytest
import tensorflow as tf

from zoo.recipe.budget import BudgetError, parse_duration
from zoo.recipe.schedule import BudgetCosineDecay
from zoo.training.backup import build_optimizer_state, load_latest, read_value
from zoo.training.budget import BudgetCallback, budget_controller, budget_state, resume_budget
from zoo.training.callbacks import BackupCallback
from zoo.training.fit import fit_length
from zoo.training.length import TrainingLength, plan_length


def trainer(**kw):
    base = dict(
        time_budget=None, max_steps=None, epochs=None, val_every_steps=None, steps_per_epoch=None
    )
    return SimpleNamespace(**{**base, **kw})


# --------------------------------------------------------------------------- length rules


def test_default_length_is_four_epochs_of_at_least_512_samples():
    # Built-in shapes: 512 images / batch 16 = 32 steps a pass: 4 x 32 steps, as before.
    length = plan_length(trainer(), steps_per_pass=32, global_batch_size=16)
    assert (length.kind, length.interval, length.total) == ("epochs", 32, 128)
    # A 20-image folder, batch 8: a pass is 2 steps; an epoch is ceil(512 / 8) = 64 steps.
    length = plan_length(trainer(), steps_per_pass=2, global_batch_size=8)
    assert (length.interval, length.total) == (64, 256)
    # 20,000 images: a pass (2500 steps) is longer than 512 samples.
    assert plan_length(trainer(), 2500, 8).total == 10000


def test_explicit_epochs_max_steps_and_intervals():
    # Explicit epochs keep Keras' meaning: passes over the data (or steps_per_epoch).
    assert plan_length(trainer(epochs=3), 2, 8).total == 6
    assert plan_length(trainer(epochs=3, steps_per_epoch=5), 2, 8).total == 15
    length = plan_length(trainer(epochs=3, val_every_steps=5), 2, 8)
    assert (length.interval, length.total) == (5, 15)
    # max_steps: ~15 validations, never closer than 10 steps, never longer than the run.
    assert plan_length(trainer(max_steps=1000), 2, 8).interval == 67  # ceil(1000 / 15)
    assert plan_length(trainer(max_steps=100), 2, 8).interval == 10
    assert plan_length(trainer(max_steps=7), 2, 8).interval == 7
    length = plan_length(trainer(max_steps=7, val_every_steps=3), 2, 8)
    assert (length.kind, length.interval, length.total) == ("steps", 3, 7)
    # A budget plans both later (unless the interval is given).
    length = plan_length(trainer(time_budget="3m"), 2, 8)
    assert (length.kind, length.interval, length.total, length.budget_s) == (
        "budget",
        None,
        None,
        180,
    )
    assert plan_length(trainer(time_budget="90s", val_every_steps=4), 2, 8).interval == 4
    assert length.epoch_end(7) is False
    assert TrainingLength("steps", 3, 7).epoch_end(6) and TrainingLength("steps", 3, 7).epoch_end(7)


# --------------------------------------------------------------------------- fake-clock runs


class FakeClock:
    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Killed(Exception):
    pass


class Ticker(keras.callbacks.Callback):
    """Plays the machine: the session's first step takes `first` s (tracing), the others `step`
    s (`slow` s after global step `slow_from`), a validation with its writes `val` s. First in
    the callback list, so the pacer reads the advanced clock. `kill_at`: die after that step."""

    def __init__(self, clock, first=5.0, step=0.5, val=1.0, slow_from=None, slow=1.0, kill_at=None):
        super().__init__()
        self.clock, self.first, self.step, self.val = clock, first, step, val
        self.slow_from, self.slow, self.kill_at, self.steps = slow_from, slow, kill_at, 0

    def on_train_batch_end(self, batch, logs=None):
        n = int(read_value(self.model.optimizer.iterations))
        slow = self.slow_from is not None and n > self.slow_from
        self.clock.t += self.first if self.steps == 0 else (self.slow if slow else self.step)
        self.steps += 1
        if n == self.kill_at:
            raise Killed(n)

    def on_epoch_end(self, epoch, logs=None):
        self.clock.t += self.val


class Recorder(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.ends: list[int] = []
        self.stopped: list[bool] = []
        self.begins: list[int] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.begins.append(epoch)

    def on_epoch_end(self, epoch, logs=None):
        self.ends.append(int(read_value(self.model.optimizer.iterations)))
        self.stopped.append(bool(self.model.stop_training))


def tiny_model(lr=None) -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    lr = lr or BudgetCosineDecay(1e-2, total_steps=1000, warmup_steps=50)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=lr), loss="mse")
    build_optimizer_state(model)
    return model


def stream_at(step: int) -> tf.data.Dataset:
    x = np.ones((2, 4), np.float32)
    return tf.data.Dataset.from_tensors((x, np.zeros((2, 1), np.float32))).repeat()


VAL = tf.data.Dataset.from_tensors((np.ones((2, 4), np.float32), np.zeros((2, 1), np.float32)))


def budget_run(tmp_path, budget, ticker, clock, *, model=None, state=None, process_start=None,
               interval=None, max_steps=None, final_views=1):  # fmt: skip
    """A budget run the way zoo.training.loop wires it (pacer, backups with the budget state)."""
    model = model or tiny_model()
    start = int(read_value(model.optimizer.iterations))
    length = TrainingLength("budget", interval, None, budget_s=budget)
    schedule = model.optimizer._learning_rate
    ctl = budget_controller(
        budget, state, process_start=process_start, max_lr_warmup=50, clock=clock
    )
    resume_budget(length, state, schedule)
    pacer = BudgetCallback(
        ctl, length, schedule=schedule, val_batches=0, max_steps=max_steps,
        fixed_interval=length.interval, clock=clock, epoch_end_s=1.0, final_views=final_views,
    )  # fmt: skip
    backup = BackupCallback(
        tmp_path / "backup",
        model,
        length,
        None,
        [],
        {},
        extras={"budget": budget_state(ctl, schedule)},
    )
    rec = Recorder()
    csv_log = keras.callbacks.CSVLogger(str(tmp_path / "log.csv"), append=start > 0)
    fit_length(
        model, stream_at, start_step=start, length=length, validation_data=VAL, verbose=0,
        shuffle=False, callbacks=[ticker, pacer, rec, csv_log, backup],
    )  # fmt: skip
    return SimpleNamespace(model=model, length=length, pacer=pacer, rec=rec, ctl=ctl)


def steps_of(model) -> int:
    return int(read_value(model.optimizer.iterations))


def test_budget_plans_validates_and_stops_at_the_planned_step(tmp_path):
    clock = FakeClock()
    r = budget_run(tmp_path, 50, Ticker(clock), clock)
    # Warm-up: steps of 5, .5, .5, .5, .5 s -> 0.5 s/step at t = 7 s; a validation is estimated
    # at 1 s (the writes, given; no validation batches to count). 43 s left, 42.14 after the 2%
    # margin: 10% of it pays 4 validations, (42.14 - 4) // 0.5 = 76 steps, every
    # ceil(76 / 4) = 19; 5 + 76 = 81 steps, LR warm-up 81 // 20 = 4.
    plan = r.ctl.plan
    assert (plan.step_time_s, plan.total_steps, plan.validation_every) == (0.5, 81, 19)
    assert (r.length.interval, r.length.total) == (19, 81)
    schedule = r.model.optimizer._learning_rate
    assert (schedule.total_steps, schedule.warmup_steps) == (81, 4)
    # Validations every 19 steps and at the end; the measured costs (1 s each) match the
    # estimate, so the re-plans keep 81 steps; the last step ends at 46.5 + 5 * 0.5 = 49 s and
    # the final validation at 50 s.
    assert r.rec.ends == [19, 38, 57, 76, 81]
    assert r.rec.stopped == [False, False, False, False, True]  # the first epoch was a segment
    assert r.pacer.validation_costs == [1.0, 1.0, 1.0, 1.0]
    assert steps_of(r.model) == 81 and r.ctl.stop_reason == "planned steps done"
    assert r.pacer.summary()["used_s"] == 50.0
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert [int(row["epoch"]) for row in rows] == [0, 1, 2, 3, 4]
    last = load_latest(tmp_path / "backup")
    assert last.step == 81 and last.meta["stopped"] is True
    assert (
        last.meta["budget"]["elapsed_s"] == 50.0 and last.meta["budget"]["lr"]["total_steps"] == 81
    )


def test_final_evaluation_with_tta_reserves_a_validation_per_view(tmp_path):
    from zoo.training.budget import TAIL_EXPORT_S, final_views

    # A full-resolution final evaluation averaging 4 flipped views costs ~4 validations.
    clock = FakeClock()
    r = budget_run(tmp_path, 50, Ticker(clock), clock, final_views=4)
    assert r.pacer.validation_costs[0] == 1.0
    assert r.ctl.tail_estimate_s == pytest.approx(1.2 * 4 * 1.0 + TAIL_EXPORT_S)
    run = SimpleNamespace(
        trainer=SimpleNamespace(final_eval="full_resolution"), predict=SimpleNamespace(tta="flip")
    )
    assert final_views(run) == 4
    run.predict.tta = None  # the model records none: one view
    assert final_views(run) == 1
    run.trainer.final_eval, run.predict.tta = "image_size", "d4"  # TTA is not used there
    assert final_views(run) == 1


def test_budget_stops_at_the_deadline_when_steps_get_slower(tmp_path):
    clock = FakeClock()
    r = budget_run(tmp_path, 50, Ticker(clock, slow_from=30, slow=1.0), clock)
    # Planned as above (81 steps, every 19); steps after 30 take 1 s. Step 57 ends at 48.5 s: its
    # validation (1 s), one more step (0.5 s measured) and the final validation would pass 50 s.
    assert r.rec.ends == [19, 38, 57]
    assert r.ctl.stop_reason == "deadline" and r.length.stop_at == 57
    assert r.pacer.summary()["used_s"] == 49.5


def test_budget_replans_from_the_step_time_measured_since_the_plan(tmp_path):
    clock = FakeClock()
    r = budget_run(tmp_path, 50, Ticker(clock, slow_from=5, slow=0.625), clock)
    # Planned at 0.5 s/step (81 steps, every 19), but every step after the warm-up takes
    # 0.625 s. The second validation (step 38, clock 29.625) re-plans at the measured 0.625:
    # 20.375 s left, 19.75 after the margin (one step): 28 steps + 2 validations = 19.5 s fit
    # (29 would need 20.125), so 38 + 28 = 66 steps, > 10% off 81: a new LR schedule. The
    # cosine then ends on time instead of being cut at the deadline (step 57 with 0.5 s/step).
    assert r.rec.ends == [19, 38, 57, 66]
    assert r.ctl.stop_reason == "planned steps done" and steps_of(r.model) == 66
    assert r.model.optimizer._learning_rate.total_steps == 66
    assert r.ctl.plan.step_time_s == 0.625
    assert r.pacer.summary()["used_s"] == pytest.approx(49.125, abs=0.01)


def test_budget_max_steps_caps_the_plan(tmp_path):
    clock = FakeClock()
    r = budget_run(tmp_path, 50, Ticker(clock), clock, max_steps=30)
    assert (r.length.total, r.length.interval) == (30, 19)
    assert r.rec.ends == [19, 30] and steps_of(r.model) == 30
    assert r.model.optimizer._learning_rate.total_steps == 30


def test_budget_max_steps_under_the_warm_up_stops_at_max_steps(tmp_path):
    # 3 steps bound the run before the 5 timed warm-up steps are done: planned at step 3
    # from the 3 timings, and stopped there (it ran the 5 warm-up steps before).
    clock = FakeClock()
    r = budget_run(tmp_path, 50, Ticker(clock), clock, max_steps=3)
    assert steps_of(r.model) == 3 and r.length.total == 3 and len(r.pacer.times) == 3
    assert r.model.optimizer._learning_rate.total_steps == 3


def test_resume_continues_a_partly_used_budget(tmp_path):
    clock = FakeClock()
    with pytest.raises(Killed):
        budget_run(tmp_path, 50, Ticker(clock, kill_at=40), clock)
    # Killed after step 40; the newest backup is the epoch end at step 38 (14 s + 1 s + 19 * 0.5
    # + 1 s = 25.5 s of training).
    backup = load_latest(tmp_path / "backup")
    state = backup.meta["budget"]
    assert backup.step == 38 and state["elapsed_s"] == 25.5 and state["steps_done"] == 38
    assert state["plan"]["total_steps"] == 81 and state["lr"]["total_steps"] == 81

    model = tiny_model()
    model.optimizer.iterations.assign(38)
    clock2 = FakeClock(1000.0)  # another process: another clock origin
    r = budget_run(tmp_path, 50, Ticker(clock2), clock2, model=model, state=state)
    # 24.5 s remain: deadline 1024.5. The warm-up (traced again) ends at step 43, t = 1007:
    # 17 s left, 17.0 after the margin (one step): 1 validation, 32 steps -> 75, within 10% of
    # the old 81: the LR schedule and the interval (19, the Keras epochs) are kept.
    assert r.ctl.plan.deadline_s == pytest.approx(1024.5)
    assert (r.length.total, r.length.interval) == (81, 19)
    assert model.optimizer._learning_rate.total_steps == 81
    # Validation at 57 (t = 1014 -> 1015); step 74 ends at 1023.5: 1023.5 + 0.5 + 1 > 1024.5.
    assert r.rec.ends == [57, 74] and r.ctl.stop_reason == "deadline"
    assert r.pacer.summary()["used_s"] == 50.0  # 25.5 before + 24.5 now
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert [int(row["epoch"]) for row in rows] == [0, 1, 2, 3]


def test_whole_process_rule_moves_the_deadline(tmp_path):
    # Start-up took 35 s before training (process_start = -35). With a 60 s budget the process
    # must end by -35 + 60 + 30 = 55 s: training ends before 55 - (final evaluation + export).
    clock = FakeClock()
    r = budget_run(tmp_path, 60, Ticker(clock), clock, process_start=-35.0)
    # Before any validation the tail is estimated at 10 s: deadline min(60, 55 - 10) = 45. The
    # first validation (1 s) sets it to 1.2 * 1 + 5 = 6.2 s: deadline 55 - 6.2 = 48.8.
    assert r.ctl.plan.deadline_s == pytest.approx(48.8)
    assert r.ctl.tail_estimate_s == pytest.approx(6.2)
    used = r.pacer.summary()["used_s"]
    assert used <= 48.8 and used + r.ctl.tail_estimate_s <= 55.0
    # Planned at t = 7 against 45 s: 68 steps after the warm-up, every 23; ends at 45 s.
    assert r.rec.ends == [23, 46, 69, 73] and used == 45.0
    # Without the rule the same run trains to its 60 s budget.
    clock = FakeClock()
    (tmp_path / "free").mkdir()
    r = budget_run(tmp_path / "free", 60, Ticker(clock), clock)
    assert r.pacer.summary()["used_s"] > 55.0


def test_epoch_end_prior_grows_with_the_model():
    from zoo.training.budget import epoch_end_estimate

    # 24.4M parameters (U-Net ResNet-34): 16 bytes each at 200 MB/s = 1.95 s, plus 0.3 s.
    assert epoch_end_estimate(24_400_000) == pytest.approx(0.3 + 1.952)
    assert epoch_end_estimate(200_000) == pytest.approx(0.316)


def test_budget_too_short_for_one_step_is_one_line(tmp_path):
    clock = FakeClock()
    with pytest.raises(BudgetError) as err:
        budget_run(tmp_path, 5, Ticker(clock), clock)  # the first step alone takes 5 s
    msg = str(err.value)
    # Used 5 s, then one step (5 s measured), the margin (a step) and a validation (1 s):
    # (5 + 2 * 5 + 1) * 1.2 = 19.2 -> 20 s.
    assert "\n" not in msg and "time_budget=5s is too short" in msg
    assert msg.endswith("give at least 20s") and parse_duration("20s") == 20


def test_steps_and_validation_interval_with_a_shorter_last_epoch(tmp_path):
    length = plan_length(trainer(max_steps=7, val_every_steps=3), 2, 8)
    model = tiny_model(lr=1e-2)
    rec = Recorder()
    fit_length(model, stream_at, start_step=0, length=length, validation_data=VAL, verbose=0,
               shuffle=False, callbacks=[rec])  # fmt: skip
    assert rec.ends == [3, 6, 7] and rec.begins == [0, 1, 2] and steps_of(model) == 7
    assert rec.stopped == [False, False, False]  # the end of max_steps is not an early stop
    # Resumed mid-epoch at step 4: the rest of epoch 1 (2 steps), then the last epoch (1 step).
    model = tiny_model(lr=1e-2)
    model.optimizer.iterations.assign(4)
    rec = Recorder()
    fit_length(model, stream_at, start_step=4, length=length, validation_data=VAL, verbose=0,
               shuffle=False, callbacks=[rec])  # fmt: skip
    assert rec.ends == [6, 7] and rec.begins == [1, 2]
