"""The planned U-Net's width on CPU, from the steps of it that fit the time budget.

A wider network learns more per step but takes fewer steps in the same time; the planner picks
width 32 only when enough of its steps fit and the narrow network would see every training image
so often that it stops learning from them. The step time is estimated before the model exists
(the width decides what is built), from the batch's pixels and a per-pixel cost measured on the
planned architecture; the budget then measures the real step time once training starts.
"""

from __future__ import annotations

from zoo.recipe.budget import VAL_COST_FRACTION

# Training-step cost of the planned VGG U-Net (depth 4, full-resolution skip) per pixel of the
# batch, in microseconds, measured on 2 cores in mixed bfloat16: width 16 0.107 s for
# 6 x 128x128 and 0.196 s for 4 x 233x197 (~1.1 us), width 32 ~0.32 s for 6 x 128x128
# (~3.3 us); float32 steps are ~1.5x slower. Other CPUs differ: `zoo.recipe.probe` measures
# how much (`recipe.cpu_probe`), and the budget measures the real step time once training starts.
CPU_STEP_US_PER_PIXEL = {16: 1.1, 32: 3.3}
CPU_FLOAT32_SLOWDOWN = 1.5
# Width 32 once this many of its steps fit (besides the budget's validation share). Measured
# at 3 minutes: nuclei (12 tiles, ~500 steps at width 32) 95.10 against 94.95 at width 16
# (~1,500 steps), median of 5 seeds, every seed higher; MRI (49 slices, ~270 steps at width
# 24) 95.7-95.8 against 96.2 at width 16 (~830 steps).
MIN_WIDE_STEPS = 400
# ... and once width 16 would pass over every training image at least this many times in the
# budget: a narrow net that has not yet learned what the data holds gains more from steps than
# from width. Measured: width 16 on the nuclei (12 tiles) peaked after ~300 passes and then
# overfitted, so width 32 paid off at 3 minutes (~750 passes of width 16); on the MRI (49
# slices) at 10 minutes width 16 ran ~4,600 steps on the quality table's machine (~375 passes)
# and scored 96.3 against width 32's 95.9 (seed 0), and the baseline, a width-16 U-Net, was
# still improving after ~220 passes (97.1). So the threshold lies between ~375 and ~750
# passes. (It was 300 while the speed probe's reference made estimates ~1.7x short there: the
# MRI's ~375 passes counted ~220; `zoo.recipe.probe`.)
MIN_NARROW_PASSES = 500


def cpu_steps(
    budget_s: float,
    batch_pixels: int,
    width: int,
    cores: int | None,
    cpu_bf16: str | None,
    slowdown: float | None = None,
) -> int:
    """Training steps of the planned U-Net at `width` (16 or 32) estimated to fit the budget,
    besides the budget's validation share (arguments as `cpu_width`'s)."""
    slow = slowdown
    if slow is None:  # not measured: the reference machine's costs, by precision and cores
        slow = (1.0 if cpu_bf16 else CPU_FLOAT32_SLOWDOWN) * 2 / max(cores or 2, 1)
    step_s = batch_pixels * CPU_STEP_US_PER_PIXEL[width] * 1e-6 * slow
    return int((1 - VAL_COST_FRACTION) * budget_s / step_s)


def cpu_width(
    budget_s: float | None,
    batch_pixels: int,
    pixels: int,
    cores: int | None,
    cpu_bf16: str | None,
    passes_per_step: float,
    slowdown: float | None = None,
) -> tuple[int, str]:
    """The VGG U-Net's base width on CPU and its reason.

    Args:
        budget_s: the training time budget (None: the run's length is set in steps).
        batch_pixels: pixels of one planned batch (batch x height x width).
        pixels: pixels of the whole training set (the rule without a budget).
        cores: CPU cores the run gets (None: 2); step time is scaled by 2 / cores.
        cpu_bf16: the CPU's native bfloat16 flag, or None (float32 steps, 1.5x slower).
        passes_per_step: the share of the training pixels one step sees (batch / images for
            tiles the window holds whole).
        slowdown: this CPU's measured step time over the reference machine's
            (`zoo.recipe.probe.cpu_slowdown`); None: estimated from `cores` and `cpu_bf16`.

    Returns:
        (32 or 16, the reason printed in the recipe's table).
    """
    if budget_s is None:  # steps, not time, set the run's length
        if pixels < 1_000_000:
            return 16, f"little data ({pixels / 1e6:.2g} Mpx)"
        return 32, f"{pixels / 1e6:.2g} Mpx, no time budget"
    wide = cpu_steps(budget_s, batch_pixels, 32, cores, cpu_bf16, slowdown)
    narrow = cpu_steps(budget_s, batch_pixels, 16, cores, cpu_bf16, slowdown)
    passes = int(narrow * passes_per_step)
    if wide < MIN_WIDE_STEPS:
        return 16, (
            f"~{wide} steps of width 32 would fit {budget_s:g} s (< {MIN_WIDE_STEPS}); "
            f"~{narrow} of width 16"
        )
    if passes < MIN_NARROW_PASSES:
        return 16, (
            f"~{narrow} steps of width 16 fit {budget_s:g} s, ~{passes} passes over the "
            f"training images (< {MIN_NARROW_PASSES}): steps before width"
        )
    return 32, (
        f"~{wide} steps of width 32 fit {budget_s:g} s (>= {MIN_WIDE_STEPS}); width 16 "
        f"would pass ~{passes} times over the training images (>= {MIN_NARROW_PASSES})"
    )
