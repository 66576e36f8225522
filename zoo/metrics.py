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
- a score with nothing to score is NaN, never 1: a class absent from both the ground truth and
  the prediction has NaN per-class scores (binary: the foreground), and with no pixel counted
  at all every score is NaN (`zoo.evaluation` turns that into an error);
- pixels whose mask equals `ignore_index` are not counted.
"""

from __future__ import annotations

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
        per_class: also report `dice_<k>` and `iou_<k>` for every class.
        name: metric name.

    Call arguments (`update_state`):
        y_true: class ids, shape (B, H, W) or (B, H, W, 1).
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
        name: str = "confusion_matrix",
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, **kwargs)
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(
                f"Invalid value for argument `num_classes`: expected a positive int. "
                f"Received: num_classes={num_classes!r}"
            )
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.prefix = prefix
        self.per_class = per_class
        self._k = 2 if num_classes == 1 else num_classes
        self.counts = self.add_variable(
            shape=(self._k, self._k), initializer="zeros", dtype="float32", name="counts"
        )

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        y_pred = ops.convert_to_tensor(y_pred)
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
        mask of the classes that occur."""
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
        if self.num_classes == 1:
            # Binary: the foreground score (NaN when no foreground was there or predicted).
            mean_dice, mean_iou = dice[1], iou[1]
        else:
            # Mean over the classes that occur; NaN (0 / 0) when no pixel was counted.
            n = ops.sum(ops.cast(present, "float32"))
            mean_dice = ops.sum(ops.where(present, dice, 0.0)) / n
            mean_iou = ops.sum(ops.where(present, iou, 0.0)) / n
        out = {f"{self.prefix}dice": mean_dice, f"{self.prefix}iou": mean_iou}
        if self.per_class:
            for k in range(self._k):
                out[f"{self.prefix}dice_{k}"] = dice[k]
                out[f"{self.prefix}iou_{k}"] = iou[k]
        return out

    def reset_state(self) -> None:
        self.counts.assign(ops.zeros((self._k, self._k), dtype="float32"))

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "ignore_index": self.ignore_index,
            "prefix": self.prefix,
            "per_class": self.per_class,
        }


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
    """

    def __init__(
        self,
        num_classes: int = 1,
        ignore_index: int | None = None,
        per_class: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.per_class = per_class
        self.confusion = ConfusionMatrix(
            num_classes=num_classes, ignore_index=ignore_index, per_class=per_class, name="seg"
        )

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
        }
