"""Segmentation metrics from streaming confusion counts: exact over a set and across replicas.

`ConfusionMatrix` accumulates a (K, K) matrix of pixel counts (rows: true class, columns: predicted
class). Dice and IoU are computed from the counts at the end, so they are exact over the whole
validation set, not an average of per-batch values. Under `tf.distribute`, Keras metric variables
are summed over replicas, so the counts (and the metrics) are the same as on one device.

Conventions:
- binary (`num_classes=1`): classes are {background, foreground}, the prediction is
  `logit > 0` (probability > 0.5), and `dice` / `iou` are the *foreground* scores;
- multiclass: the prediction is the arg-max class, and `dice` / `iou` are means over the classes
  that occur in the ground truth or the prediction (a class absent from both is skipped, not 1);
  with `background_class` set, the means leave that class out (nnU-Net's foreground Dice,
  MONAI's `include_background=False`): the background's Dice sits near 1 on most data and would
  hide changes in the classes that matter; its per-class values are still reported;
- a score with nothing to score is NaN, never 1: a class absent from both the ground truth and
  the prediction has NaN per-class scores (binary: the foreground), and with no pixel counted
  at all every score is NaN (`zoo.evaluation` turns that into an error);
- multilabel (`multilabel=True`): one sigmoid per label, the prediction of label k is
  `logit_k > 0` (never an arg-max); each label has its own 2x2 counts and its foreground
  Dice/IoU, reported per label (`dice_<label name>`) and as the mean over the labels that occur;
  `ignore_index` applies per label (a pixel ignored for one label still counts for the others);
- pixels whose mask equals `ignore_index` are not counted.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="zoo")
class ConfusionMatrix(keras.metrics.Metric):
    """Pixel confusion counts of a segmentation model, reported as Dice and IoU.

    Args:
        num_classes: number of logit channels; 1 means binary (sigmoid) segmentation.
        ignore_index: mask value to exclude from the counts, or None.
        prefix: name prefix of the reported values (`"<prefix>dice"`, `"<prefix>iou"`).
        per_class: also report `dice_<k>` and `iou_<k>` for every class (multilabel:
            `dice_<label name>`, `iou_<label name>`).
        multilabel: `num_classes` independent 0/1 labels (masks (B, H, W, K)).
        class_names: multilabel label names for the per-label keys (default: `0..K-1`).
        background_class: multiclass: the class id left out of the mean `dice` / `iou`
            (None: every class counts).
        name: metric name.

    Call arguments (`update_state`):
        y_true: class ids, shape (B, H, W) or (B, H, W, 1); multilabel: 0/1 (B, H, W, K).
        y_pred: logits, shape (B, H, W, num_classes).

    Example:

    >>> m = ConfusionMatrix(num_classes=1)
    >>> m.update_state([[[1, 0]]], [[[[5.0], [-5.0]]]])
    >>> float(m.result()["dice"])
    1.0
    """

    def __init__(
        self,
        num_classes: int = 1,
        ignore_index: int | None = None,
        prefix: str = "",
        per_class: bool = False,
        multilabel: bool = False,
        class_names: Sequence[str] | None = None,
        background_class: int | None = None,
        name: str = "confusion_matrix",
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, **kwargs)
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(
                f"Invalid value for argument `num_classes`: expected a positive int. "
                f"Received: num_classes={num_classes!r}"
            )
        if background_class is not None and (
            num_classes < 2
            or multilabel
            or isinstance(background_class, bool)
            or not isinstance(background_class, int)
            or not 0 <= background_class < num_classes
        ):
            raise ValueError(
                "Invalid value for argument `background_class`: expected None or a class id in "
                f"0..{num_classes - 1} of multiclass counts (binary Dice is already the "
                f"foreground's). Received: background_class={background_class!r}"
            )
        self.background_class = background_class
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.prefix = prefix
        self.per_class = per_class
        self.multilabel = bool(multilabel)
        self.class_names = list(class_names) if class_names is not None else None
        if self.class_names is not None and len(self.class_names) != num_classes:
            raise ValueError(
                f"Invalid value for argument `class_names`: expected {num_classes} names. "
                f"Received: class_names={self.class_names!r}"
            )
        self._k = 2 if num_classes == 1 or multilabel else num_classes
        # Multilabel: one 2x2 matrix per label, (K, 2, 2); otherwise one (k, k) matrix.
        shape = (num_classes, 2, 2) if self.multilabel else (self._k, self._k)
        self.counts = self.add_variable(
            shape=shape, initializer="zeros", dtype="float32", name="counts"
        )

    def _update_multilabel(self, y_true: Any, y_pred: Any, sample_weight: Any) -> None:
        k = self.num_classes
        y_true = ops.cast(ops.reshape(ops.convert_to_tensor(y_true), ops.shape(y_pred)), "int32")
        pred = ops.cast(y_pred > 0, "int32")
        valid = ops.ones_like(y_true, dtype="bool")
        if self.ignore_index is not None:
            valid = ops.not_equal(y_true, self.ignore_index)
        true = ops.clip(ops.where(valid, y_true, 0), 0, 1)
        w = ops.cast(valid, "float32")
        if sample_weight is not None:  # (B, H, W[, 1]) per pixel: the same for every label
            sw = ops.reshape(ops.cast(sample_weight, "float32"), ops.shape(w)[:-1])
            w = w * ops.expand_dims(sw, -1)
        label = ops.arange(k, dtype="int32")  # broadcast along the last axis
        idx = ops.reshape(label * 4 + true * 2 + pred, (-1,))
        flat = ops.segment_sum(ops.reshape(w, (-1,)), idx, num_segments=k * 4)
        self.counts.assign_add(ops.reshape(flat, (k, 2, 2)))

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        y_pred = ops.convert_to_tensor(y_pred)
        if self.multilabel:
            self._update_multilabel(y_true, y_pred, sample_weight)
            return
        y_true = ops.cast(
            ops.reshape(ops.convert_to_tensor(y_true), ops.shape(y_pred)[:-1]), "int32"
        )
        if self.num_classes == 1:
            pred = ops.cast(y_pred[..., 0] > 0, "int32")
        else:
            pred = ops.cast(ops.argmax(y_pred, axis=-1), "int32")
        valid = ops.ones_like(y_true, dtype="bool")
        if self.ignore_index is not None:
            valid = ops.not_equal(y_true, self.ignore_index)
        # Out-of-range ids (other than ignore) are a data error caught by the pipeline; clip keeps
        # the one-hot below well defined.
        true = ops.clip(ops.where(valid, y_true, 0), 0, self._k - 1)
        w = ops.cast(valid, "float32")
        if sample_weight is not None:
            w = w * ops.reshape(ops.cast(sample_weight, "float32"), ops.shape(w))
        idx = ops.reshape(true * self._k + pred, (-1,))
        flat = ops.segment_sum(ops.reshape(w, (-1,)), idx, num_segments=self._k * self._k)
        self.counts.assign_add(ops.reshape(flat, (self._k, self._k)))

    def total(self) -> Any:
        """Pixels counted so far (0 means nothing was evaluated)."""
        return ops.sum(self.counts)

    def scores(self) -> tuple[Any, Any, Any]:
        """Per-class Dice and IoU (NaN for classes absent from truth and prediction) and the
        mask of the classes that occur (multilabel: per label, of its foreground)."""
        if self.multilabel:
            tp, fn, fp = self.counts[:, 1, 1], self.counts[:, 1, 0], self.counts[:, 0, 1]
        else:
            tp = ops.diagonal(self.counts)
            fn = ops.sum(self.counts, axis=1) - tp
            fp = ops.sum(self.counts, axis=0) - tp
        present = (tp + fn + fp) > 0
        nan = ops.full_like(tp, float("nan"))
        dice = ops.where(present, 2 * tp / ops.maximum(2 * tp + fp + fn, 1e-12), nan)
        iou = ops.where(present, tp / ops.maximum(tp + fp + fn, 1e-12), nan)
        return dice, iou, present

    def result(self) -> dict[str, Any]:
        dice, iou, present = self.scores()
        if self.num_classes == 1 and not self.multilabel:
            # Binary: the foreground score (NaN when no foreground was there or predicted).
            mean_dice, mean_iou = dice[1], iou[1]
        else:
            # Mean over the classes that occur (but the background); NaN (0 / 0) when none.
            counted = present
            if self.background_class is not None:
                counted = ops.logical_and(
                    present, ops.not_equal(ops.arange(self._k), self.background_class)
                )
            n = ops.sum(ops.cast(counted, "float32"))
            mean_dice = ops.sum(ops.where(counted, dice, 0.0)) / n
            mean_iou = ops.sum(ops.where(counted, iou, 0.0)) / n
        out = {f"{self.prefix}dice": mean_dice, f"{self.prefix}iou": mean_iou}
        if self.per_class:
            for k, key in enumerate(self.keys()):
                out[f"{self.prefix}dice_{key}"] = dice[k]
                out[f"{self.prefix}iou_{key}"] = iou[k]
        return out

    def keys(self) -> list[str]:
        """The suffixes of the per-class values: class ids, or multilabel label names."""
        if not self.multilabel:
            return [str(k) for k in range(self._k)]
        return label_keys(self.class_names or [str(k) for k in range(self.num_classes)])

    def reset_state(self) -> None:
        self.counts.assign(ops.zeros(tuple(self.counts.shape), dtype="float32"))

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "ignore_index": self.ignore_index,
            "prefix": self.prefix,
            "per_class": self.per_class,
            "multilabel": self.multilabel,
            "class_names": self.class_names,
            "background_class": self.background_class,
        }


def label_keys(names: Sequence[str]) -> list[str]:
    """Metric-name-safe label names (`dice_<key>`): other characters become "_"; a clash
    (or an empty name) falls back to the label's index."""
    keys = [re.sub(r"[^0-9A-Za-z_.-]", "_", str(n)) for n in names]
    if len(set(keys)) != len(keys) or not all(keys):
        return [str(k) for k in range(len(names))]
    return keys


@keras.saving.register_keras_serializable(package="zoo")
class MetricsLayer(keras.layers.Layer):
    """Updates a `ConfusionMatrix` inside a training graph and passes the logits through.

    Targets travel as model inputs (see `losses.attach`), so metrics, like the loss layers, are
    computed in the graph: `logits = MetricsLayer(num_classes)([mask, logits])`. During `fit`
    the values appear on the progress bar (`dice`, `iou`; `val_dice`, `val_iou` on validation).

    Args:
        num_classes: number of logit channels; 1 means binary.
        ignore_index: mask value excluded from the counts, or None.
        per_class: also report per-class Dice and IoU.
        multilabel: K independent labels (`ConfusionMatrix`).
        class_names: multilabel label names (per-label keys `dice_<name>`).
        background_class: multiclass: the class left out of the mean Dice/IoU (`ConfusionMatrix`).
    """

    def __init__(
        self,
        num_classes: int = 1,
        ignore_index: int | None = None,
        per_class: bool = False,
        multilabel: bool = False,
        class_names: Sequence[str] | None = None,
        background_class: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.per_class = per_class
        self.multilabel = bool(multilabel)
        self.class_names = list(class_names) if class_names is not None else None
        self.background_class = background_class
        self.confusion = ConfusionMatrix(
            num_classes=num_classes, ignore_index=ignore_index, per_class=per_class,
            multilabel=multilabel, class_names=class_names, background_class=background_class,
            name="seg",
        )  # fmt: skip

    def call(self, inputs: list[Any]) -> Any:
        mask, logits = inputs
        self.confusion.update_state(mask, logits)
        return logits

    def compute_output_shape(self, input_shape: list[Any]) -> Any:
        return input_shape[1]

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "ignore_index": self.ignore_index,
            "per_class": self.per_class,
            "multilabel": self.multilabel,
            "class_names": self.class_names,
            "background_class": self.background_class,
        }
