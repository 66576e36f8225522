"""Test-time augmentation of a planned run: the flipped views its model predicts with."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def plan_tta(hflip: bool, vflip: bool) -> tuple[str, str]:
    """Test-time augmentation from the flips a run trains with, and why.

    Averaging the predictions of the flipped views the model learned cancels its
    left-right (and up-down) biases at the outlines, as nnU-Net's mirroring does: measured
    +0.10..+0.25 Dice on every MRI model of the quality table (docs/quality.md), level on the
    nuclei. 90-degree turns are left out: twice the views for no measured gain.
    """
    if hflip and vflip:
        return "flip", "trained with left-right and up-down flips: average the 4 flipped views"
    if hflip:
        return "hflip", "trained with left-right flips only: average the image and its mirror"
    return "none", "no left-right flips in training: predict the image as it is"


def choose_tta(
    choose: Callable[[str, Any, str], None], hflip: bool, vflip: bool, whole_files: bool
) -> None:
    """Plan `predict.tta` (`plan_tta`) through the planner's `choose`, and, when it averages
    views and the run's final scores may be taken on the stored files (`whole_files`: not
    resampled, no resize mode typed), a full-resolution final evaluation with them."""
    tta, why = plan_tta(hflip, vflip)
    choose("predict.tta", tta, why)
    if tta != "none" and whole_files:
        choose(
            "trainer.final_eval",
            "full_resolution",
            "the final Dice as predictions get it: each validation file whole, with the TTA",
        )
