"""`lovasz`: the Lovasz hinge (binary, multilabel) and Lovasz-softmax (multiclass) losses."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from keras import ops

from losses.base import LossLayer, register_term
from losses.core import REDUCTIONS, prepare, probabilities, region_loss, safe_div
from losses.modes import BINARY, MODES, MULTICLASS, validate_mode
from losses.options import ClassIndices, OneOf, OrNone, check_class_options


def lovasz_extension(errors: Any, target: Any, w: Any) -> Any:
    """Lovasz extension of the (weighted) Jaccard loss, per row of `(R, P)` arrays.

    `errors` are the per-pixel errors, `target` the 0/1 ground truth, `w` the pixel weights.
    Pixels are sorted by decreasing error; the k-th gets the increase of the Jaccard loss
    `1 - I / U` when it joins the error set (Berman et al., Alg. 1). With weights the counts
    are weighted: a pixel of weight 0 changes neither I nor U, so it is as if removed.
    """
    order = ops.argsort(-errors, axis=-1)
    e = ops.take_along_axis(errors, order, axis=-1)
    g = ops.take_along_axis(target, order, axis=-1)
    ws = ops.take_along_axis(w, order, axis=-1)
    gts = ops.sum(ws * g, axis=-1, keepdims=True)
    # 1 - I_k / U_k = (U_k - I_k) / U_k, U_k - I_k = weight seen so far; U_k = 0 only before
    # any pixel that counts when there is no foreground: the empty set's loss, 0.
    jac = safe_div(ops.cumsum(ws, axis=-1), gts + ops.cumsum(ws * (1.0 - g), axis=-1))
    step = jac - ops.pad(jac[:, :-1], [[0, 0], [1, 0]])
    return ops.sum(e * ops.stop_gradient(step), axis=-1)


OPTIONS = {"reduction": OneOf(REDUCTIONS), "classes": OrNone(ClassIndices())}


def lovasz(
    y_true: Any,
    y_pred: Any,
    weight: Any = None,
    *,
    mode: str = BINARY,
    ignore_index: int | None = None,
    reduction: str = "batch",
    classes: Sequence[int] | None = None,
) -> Any:
    """Lovasz loss on logits: a convex surrogate of 1 - IoU (Berman et al. 2018).

    Binary and multilabel: the Lovasz hinge of each channel, errors `relu(1 - x (2 t - 1))`.
    Multiclass: the Lovasz-softmax, errors `|t_c - softmax_c|`, averaged over the classes
    present in the mask. `classes` lists the channels averaged instead (all modes).
    `reduction="batch"` sorts the pixels of the whole batch together, `"image"` each image's
    and averages them.
    """
    validate_mode(mode, MODES, "lovasz")
    target, logits, w = prepare(
        y_true, y_pred, weight, mode=mode, ignore_index=ignore_index, term="lovasz"
    )
    num_classes = logits.shape[-1]
    check_class_options("lovasz", num_classes, classes=classes)
    w = ops.broadcast_to(w, ops.shape(logits))
    if mode == MULTICLASS:
        errors = ops.abs(target - probabilities(logits, mode))
    else:
        errors = ops.relu(1.0 - logits * (2.0 * target - 1.0))

    def rows(x: Any) -> Any:
        # (B, ..., C) -> (B, C, P) per image, (1, C, B * P) for the batch.
        x = ops.reshape(x, (ops.shape(x)[0], -1, num_classes))
        if reduction == "batch":
            x = ops.reshape(x, (1, -1, num_classes))
        return ops.transpose(x, (0, 2, 1))

    e, t, wr = rows(errors), rows(target), rows(w)
    groups, channels = ops.shape(e)[0], ops.shape(e)[1]
    flat = (groups * channels, -1)
    value = ops.reshape(
        lovasz_extension(ops.reshape(e, flat), ops.reshape(t, flat), ops.reshape(wr, flat)),
        (groups, channels),
    )
    n = ops.sum(wr, axis=-1)  # (groups, C): the weight of the pixels that count
    if classes is None and mode == MULTICLASS:  # only the classes present (smp's default)
        n = ops.where(ops.sum(wr * t, axis=-1) > 0, n, ops.zeros_like(n))
    # The shared per-image mean, with the batch as one group for "batch": exact over the
    # global batch for "image"; for "batch" each replica sorted its own share (a sort does
    # not split into sums over replicas), so it is the replicas' mean.
    return region_loss(value, n, "image", classes)


@register_term
class Lovasz(LossLayer):
    """Lovasz hinge / Lovasz-softmax loss on logits, as a loss layer (term `lovasz`).

    Options: `reduction` (`"batch"`: the pixels of the whole batch sorted together, as
    segmentation_models_pytorch's `per_image=False`; `"image"`: per image, then the mean),
    `classes` (the channels averaged; None: every channel, in multiclass mode the classes
    present in the mask). All modes; multilabel masks give one hinge per label, averaged.
    Per-pixel weights weight the counts of the Jaccard index; weight 0 and `ignore_index`
    leave a pixel out.

    Example:

    ```python
    value = Lovasz(reduction="image")([mask, logits])
    ```

    Reference:
    - [Berman et al., 2018](https://arxiv.org/abs/1705.08790)
    """

    term, fn, modes, option_checks = "lovasz", staticmethod(lovasz), MODES, OPTIONS


LovaszLoss = Lovasz.loss_class
