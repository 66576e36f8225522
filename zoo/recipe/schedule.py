"""A cosine learning-rate schedule whose length is set after the optimizer is built.

With a time budget the number of steps is known only after the warm-up steps have been timed,
but the optimizer (and its schedule) must exist before the first step. `BudgetCosineDecay` keeps
its warm-up and total step counts in variables: build the optimizer with a provisional length,
then `set_length(plan.schedule_steps, plan.lr_warmup_steps)` once `BudgetController` has
planned. The warm-up steps that ran before run on the linear ramp, as they would with the final
length (the ramp only depends on `warmup_steps`).

lr(s) = peak * s / warmup                                     for s < warmup
lr(s) = peak * (alpha + (1 - alpha) * (1 + cos(pi * p)) / 2)  p = (s - warmup) / (total - warmup)
lr(s) = peak * alpha                                          for s >= total

A re-plan during the decay (`set_length(..., at_step=s0)`) keeps the learning rate continuous:
the progress p0 reached at s0 is kept and the rest of the curve is spread over the new length,
p = p0 + (1 - p0) * (s - s0) / (total - s0). Otherwise a longer plan late in a run would raise
the learning rate again.
"""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="zoo")
class BudgetCosineDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up then cosine decay to `alpha * peak`, with a settable length.

    Args:
        peak: the learning rate at the end of the warm-up.
        total_steps: provisional schedule length (steps); `set_length` changes it.
        warmup_steps: linear warm-up steps (0: start at `peak`).
        alpha: final learning rate as a fraction of `peak`.

    Example:
        >>> lr = BudgetCosineDecay(1e-3, total_steps=1000, warmup_steps=10)
        >>> lr.set_length(200, 10)
        >>> round(float(lr(105)), 6)  # half-way through the decay
        0.0005
    """

    def __init__(
        self, peak: float, total_steps: int, warmup_steps: int = 0, alpha: float = 0.0
    ) -> None:
        if not (isinstance(peak, int | float) and math.isfinite(peak) and peak > 0):
            raise ValueError(
                f"Invalid value for argument `peak`: expected > 0. Received: peak={peak!r}"
            )
        if not 0 <= alpha <= 1:
            raise ValueError(
                f"Invalid value for argument `alpha`: expected in [0, 1]. Received: alpha={alpha!r}"
            )
        self.peak = float(peak)
        self.alpha = float(alpha)
        self._total = keras.Variable(1, dtype="int64", trainable=False, name="lr_total_steps")
        self._warmup = keras.Variable(0, dtype="int64", trainable=False, name="lr_warmup_steps")
        # The decay's anchor: (step, progress) kept by a re-plan; step -1: none (from warm-up).
        self._anchor_step = keras.Variable(-1, dtype="int64", trainable=False, name="lr_anchor")
        self._anchor_progress = keras.Variable(
            0.0, dtype="float32", trainable=False, name="lr_anchor_progress"
        )
        self.set_length(total_steps, warmup_steps)

    def progress(self, step: int) -> float:
        """The decay's progress p in [0, 1] at `step` (0 during the warm-up)."""
        return float(self._progress(ops.cast(step, "float32")))

    def _progress(self, s: Any) -> Any:
        total = ops.cast(self._total, "float32")
        anchored = self._anchor_step >= 0
        s0 = ops.where(
            anchored, ops.cast(self._anchor_step, "float32"), ops.cast(self._warmup, "float32")
        )
        p0 = ops.where(anchored, ops.cast(self._anchor_progress, "float32"), 0.0)
        return ops.clip(p0 + (1 - p0) * (s - s0) / ops.maximum(total - s0, 1.0), 0.0, 1.0)

    def set_length(
        self, total_steps: int, warmup_steps: int | None = None, at_step: int | None = None
    ) -> None:
        """Set the schedule length (and warm-up) in steps; takes effect at the next step.

        Args:
            total_steps: the new length.
            warmup_steps: the new warm-up (None: unchanged).
            at_step: the current step when re-planning a running schedule: past the warm-up,
                the learning rate continues from where it is (see the module docstring).
        """
        total = int(total_steps)
        warmup = int(self._warmup.numpy()) if warmup_steps is None else int(warmup_steps)
        if total < 1 or warmup < 0:
            raise ValueError(
                "Invalid value for arguments `total_steps`/`warmup_steps`: expected total >= 1 "
                f"and warmup >= 0. Received: total_steps={total_steps!r}, "
                f"warmup_steps={warmup_steps!r}"
            )
        warmup = min(warmup, total - 1)  # the decay keeps at least one step
        if at_step is not None and int(at_step) > max(warmup, self.warmup_steps):
            p0 = self.progress(int(at_step))  # with the old length
            self._anchor_progress.assign(p0)
            self._anchor_step.assign(int(at_step))
        else:
            self._anchor_step.assign(-1)
            self._anchor_progress.assign(0.0)
        self._total.assign(total)
        self._warmup.assign(warmup)

    @property
    def total_steps(self) -> int:
        return int(self._total.numpy())

    @property
    def warmup_steps(self) -> int:
        return int(self._warmup.numpy())

    @property
    def anchor(self) -> tuple[int, float]:
        """(step, progress) the decay continues from after a re-plan; step -1: none."""
        return int(self._anchor_step.numpy()), float(self._anchor_progress.numpy())

    def __call__(self, step: Any) -> Any:
        s = ops.cast(step, "float32")
        warmup = ops.cast(self._warmup, "float32")
        ramp = self.peak * s / ops.maximum(warmup, 1.0)
        p = self._progress(s)
        decay = self.peak * (self.alpha + (1 - self.alpha) * 0.5 * (1 + ops.cos(math.pi * p)))
        return ops.where(s < warmup, ramp, decay)

    def get_config(self) -> dict[str, Any]:
        return {
            "peak": self.peak,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "alpha": self.alpha,
            "anchor": list(self.anchor),
        }

    def restore(self, config: dict[str, Any]) -> None:
        """Take the length, warm-up and anchor of `get_config()` (a resumed run)."""
        self.set_length(int(config["total_steps"]), int(config["warmup_steps"]))
        step, progress = config.get("anchor") or (-1, 0.0)
        self._anchor_step.assign(int(step))
        self._anchor_progress.assign(float(progress))

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> BudgetCosineDecay:
        config = dict(config)
        anchor = config.pop("anchor", None)
        schedule = cls(**config)
        if anchor:
            schedule.restore({**schedule.get_config(), "anchor": anchor})
        return schedule
