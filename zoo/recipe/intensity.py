"""The input scale a recipe plans: data that use a small part of [0, 1] are spread to 0..1.

The models take images in [0, 1] by one fixed rule (docs/data.md, "Image intensities"): a
12-bit camera's counts in 16-bit files are value / 65535, at most 0.0625, and dim fluorescence
may use a hundredth of the range. A randomly initialized first convolution followed by batch
norm is blind to the input's scale in its forward pass, but not in training: its gradients
scale with its inputs, so at 1/100 of the range it hardly moves while the rest of the network
trains. The plan then gives the encoder the training intensities' span (`input_range`), which
it maps to 0..1 in a layer of its own, inside the model: prediction, evaluation and exports
see the same [0, 1] files the training saw and apply it without being told.

Measured (`recipe=auto`, 1 minute, seeds 0-2, docs/quality.md "Input scale"): the nuclei of
the quality table as 16-bit counts spanning 0.5% of the range scored 92.1 / 93.2 / 85.7
without it and 94.9 / 94.9 / 94.9 with it; as the 8-bit files 95.2 / 94.9 / 95.2.
"""

from __future__ import annotations

from zoo.recipe.fingerprint import Fingerprint

# Below this span (of [0, 1]) the plan sets `input_range` (U-Net plans only); the real sets
# of the quality table span 0.64 and more, and keep the plain input.
INPUT_RANGE_BELOW = 0.25


def input_span(fp: Fingerprint) -> tuple[float, float] | None:
    """The planned `input_range`: the training intensities' 0.5 and 99.5 percentiles (the
    lowest and highest over the channels) where they span less than `INPUT_RANGE_BELOW`, else
    None (also for constant images, which have nothing to spread)."""
    low = min(fp.intensity.get("p0_5") or [0.0])
    high = max(fp.intensity.get("p99_5") or [1.0])
    if not 0.0 < high - low < INPUT_RANGE_BELOW:
        return None
    return round(float(low), 6), round(float(high), 6)


def span_why(span: tuple[float, float] | None) -> str:
    """The reason the plan's table gives for an `input_range` (nothing without one)."""
    if span is None:
        return ""
    return (
        f"; input_range {span[0]:.4g}..{span[1]:.4g}: the intensities span only "
        f"{span[1] - span[0]:.1%} of the value range, spread to 0..1 inside the model"
    )
