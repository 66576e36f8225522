"""The planned loss: BCE or CE + Dice, weighted only where a class is rare (`plan_recipe`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from zoo.recipe.fingerprint import Fingerprint

# Below this foreground share BCE is up-weighted. Above it plain BCE + Dice (nnU-Net's loss) is
# better for the overlap metric: a positive weight w moves the decision threshold of a calibrated
# model from 0.5 to 1 / (1 + w), while the best threshold for Dice is about Dice / 2 (near 0.5
# when the overlap is good). Measured on the MRI (15.5%): weight 2.34 -> 1 raised Dice at 3
# minutes on all three seeds (docs/quality.md). Several classes: CE's class weights likewise
# only when a foreground class is rare; the 3-class MRI's weights (0.49 / 1.08 / 1.43) had it
# predict gray matter on 2,314 background pixels against 337 the other way, and without them
# Dice rose on every seed.
RARE_FOREGROUND = 0.05


def plan_loss(
    fp: Fingerprint, choose: Callable[[str, Any, str], None], background: int | None = None
) -> None:
    """Choose `loss` and its `loss_options` for the fingerprinted data through `choose`;
    several classes: also the background class the metrics leave out (`background`, the
    command line's `data.background_class`, else class 0)."""
    freqs = fp.class_frequencies
    if fp.num_classes == 1:
        f = max(fp.foreground_fraction, 1e-6)
        loss_why = "BCE for calibrated pixels + Dice for the overlap metric"
        what = "foreground"
        if fp.labels:  # multilabel: one sigmoid per label; the loss averages over the labels
            f = max(sum(fp.label_frequencies) / len(fp.label_frequencies), 1e-6)
            loss_why = "multilabel: BCE + Dice per label"
            what = "the labels' mean share"
        if f >= RARE_FOREGROUND:
            loss_why += f"; {what} {f:.1%} is not rare (< {RARE_FOREGROUND:.0%}): unweighted"
        choose("loss", "wbce+dice", loss_why)
        if f < RARE_FOREGROUND:
            pw = round(min(math.sqrt((1 - f) / f), 10.0), 2)
            choose(
                "loss_options.wbce.pos_weight",
                pw,
                f"{what} is {f:.1%} of pixels (rare): up-weight it sqrt(imbalance)",
            )
    else:
        present = [q for q in freqs if q > 0]
        rarest = min((q for q in freqs[1:] if q > 0), default=1.0)  # class 0: background
        loss_why = "multi-class: CE + Dice"
        if rarest >= RARE_FOREGROUND:
            loss_why += (
                f"; the rarest foreground class has {rarest:.1%} of pixels, not rare "
                f"(< {RARE_FOREGROUND:.0%}): unweighted"
            )
        choose("loss", "wce+dice", loss_why)
        if rarest < RARE_FOREGROUND:
            raw = [(1.0 / math.sqrt(q)) if q > 0 else 0.0 for q in freqs]
            mean = sum(r for r in raw if r > 0) / max(len(present), 1)
            weights = [round(min(max(r / mean, 0.1), 10.0), 3) if r > 0 else 1.0 for r in raw]
            choose(
                "loss_options.wce.class_weights",
                weights,
                f"a class has {rarest:.1%} of pixels (rare): sqrt inverse class frequencies, "
                "mean 1",
            )
        bg = 0 if background is None else background
        choose(
            "loss_options.dice.classes",
            [k for k in range(fp.num_classes) if k != bg],
            f"Dice over the foreground classes (class {bg} is background"
            + (", as in the fingerprint" if bg == 0 else "")
            + "; nnU-Net's choice): the background's Dice sits near 1 and only dilutes the others'",
        )
        choose(
            "data.background_class",
            bg,
            f"val_dice (and so the best checkpoint) averages the foreground classes, as the "
            f"Dice loss; class {bg}'s Dice stays in the per-class scores",
        )
