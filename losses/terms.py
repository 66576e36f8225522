"""Loss terms as Keras loss *layers* and as standard `keras.losses.Loss` objects.

A loss layer receives targets and weights as graph inputs, the way the seed article did it:
`WeightedBCE()([y_true, y_weight, y_pred])` (or `[y_true, y_pred]`), registers the value with
`add_loss` and records it in a `keras.metrics.Mean` named `<name>_loss` so it shows on the
progress bar. The matching `*Loss` class computes the same number from `compile(loss=...)`
with an optional per-pixel `sample_weight` map. Both call `losses.functional`.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import keras
from keras import ops

from losses import functional as F
from losses.registry import register_loss

PACKAGE = "segzoo_losses"


# --------------------------------------------------------------------------- options


def _options_of(fn: Callable[..., Any]) -> dict[str, Any]:
    """Keyword options (and defaults) of a functional term, except mode/ignore_index."""
    return {
        p.name: p.default
        for p in inspect.signature(fn).parameters.values()
        if p.kind is p.KEYWORD_ONLY and p.name not in ("mode", "ignore_index")
    }


def _bad(term: str, key: str, value: Any, expected: str) -> ValueError:
    return ValueError(
        f"Invalid value for argument `{key}` of loss '{term}': expected {expected}. "
        f"Received: {key}={value!r}"
    )


def _number(term: str, key: str, value: Any, low: float, high: float, open_low: bool) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if open_low else value >= low) and value <= high
    if not ok:
        bound = f"{'>' if open_low else '>='} {low}" + (
            f" and <= {high}" if high < math.inf else ""
        )
        raise _bad(term, key, value, f"a finite number {bound}")
    return float(value)


def validate_options(term: str, options: dict[str, Any]) -> dict[str, Any]:
    """Check the term options; return them (floats as floats, sequences as lists)."""
    out = dict(options)
    for key, value in options.items():
        if key == "pos_weight" or (key == "gamma" and term == "tversky"):
            out[key] = _number(term, key, value, 0.0, math.inf, open_low=True)
        elif key in ("gamma", "smooth", "eps", "beta") or (key == "alpha" and term == "tversky"):
            out[key] = _number(term, key, value, 0.0, math.inf, open_low=False)
        elif key == "alpha":  # focal: a balance in [0, 1] or None
            out[key] = None if value is None else _number(term, key, value, 0.0, 1.0, False)
        elif key == "label_smoothing":
            out[key] = _number(term, key, value, 0.0, 1.0, open_low=False)
        elif key == "normalization" and value not in F.NORMALIZATIONS:
            raise _bad(term, key, value, f"one of {list(F.NORMALIZATIONS)}")
        elif key == "reduction" and value not in F.REDUCTIONS:
            raise _bad(term, key, value, f"one of {list(F.REDUCTIONS)}")
        elif key == "classes" and value is not None:
            if (
                isinstance(value, str | bytes)
                or not isinstance(value, Sequence | tuple)
                or not value
                or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in value)
            ):
                raise _bad(term, key, value, "None or a non-empty list of class indices >= 0")
            out[key] = [int(c) for c in value]
        elif key == "class_weights" and value is not None:
            try:
                weights = [float(c) for c in value]
            except (TypeError, ValueError):
                weights = None
            if not weights or not all(math.isfinite(c) and c >= 0 for c in weights):
                raise _bad(term, key, value, "None or a list of finite weights >= 0, one per class")
            out[key] = weights
    return out


def _split_options(term: str, fn: Callable[..., Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Pop the term options out of `kwargs` (defaults filled in) and validate them."""
    defaults = _options_of(fn)
    options = {k: kwargs.pop(k, v) for k, v in defaults.items()}
    return validate_options(term, options)


def _check_common(term: str, mode: str, ignore_index: Any, modes: Sequence[str]) -> None:
    F.validate_mode(mode, modes, term)
    if ignore_index is not None and (
        isinstance(ignore_index, bool) or not isinstance(ignore_index, int)
    ):
        raise _bad(term, "ignore_index", ignore_index, "None or an integer class id")


def _unknown(term: str, fn: Callable[..., Any], kwargs: dict[str, Any], allowed: Sequence[str]):
    unknown = [k for k in kwargs if k not in allowed]
    if unknown:
        valid = ["mode", "ignore_index", *_options_of(fn)]
        raise ValueError(f"Unknown option(s) {unknown} for loss '{term}'. Valid options: {valid}")


# --------------------------------------------------------------------------- base classes


def _unpack(name: str, inputs: Sequence[Any]) -> tuple[Any, Any, Any]:
    """`(y_true, y_weight, y_pred)` from `[y_true, y_weight, y_pred]` or `[y_true, y_pred]`."""
    if len(inputs) == 3:
        return tuple(inputs)
    if len(inputs) == 2:
        return inputs[0], None, inputs[1]
    raise ValueError(
        f"Loss layer '{name}' expects [y_true, y_weight, y_pred] or [y_true, y_pred]. "
        f"Received {len(inputs)} inputs."
    )


class LossLayer(keras.layers.Layer):
    """Base of the loss layers: `call([y_true, y_weight, y_pred])` adds and returns the loss.

    Subclasses set `term` (the registry name), `fn` (the functional core) and `modes`.

    Args:
        mode: "binary", "multiclass" or "multilabel" (see `losses.functional`).
        ignore_index: mask value whose pixels are left out of the loss, or None.
        loss_weight: factor applied to the value that is added, logged and returned.
        name: layer name; the logged metric is `<name>_loss`. Defaults to the term name.
        **kwargs: the term's options (see the subclass) and base-layer arguments.

    Call arguments:
        inputs: `[y_true, y_weight, y_pred]` or `[y_true, y_pred]`; `y_pred` are logits.

    Returns:
        The weighted scalar loss (also added with `add_loss`).
    """

    term: ClassVar[str] = ""
    fn: ClassVar[Callable[..., Any]]
    modes: ClassVar[tuple[str, ...]] = F.MODES

    def __init__(
        self,
        mode: str = F.BINARY,
        ignore_index: int | None = None,
        loss_weight: float = 1.0,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        fn = type(self).fn
        options = _split_options(self.term, fn, kwargs)
        _unknown(self.term, fn, kwargs, ("dtype", "trainable", "autocast"))
        _check_common(self.term, mode, ignore_index, self.modes)
        loss_weight = _number(self.term, "loss_weight", loss_weight, 0.0, math.inf, True)
        # Loss math stays float32 under a mixed-precision policy.
        kwargs["dtype"] = "float32"
        super().__init__(name=name or self.term, **kwargs)
        self.mode = mode
        self.ignore_index = ignore_index
        self.loss_weight = loss_weight
        self.options = options
        self.tracker = keras.metrics.Mean(name=f"{self.name}_loss")
        self.built = True

    def compute(
        self, y_true: Any, y_pred: Any, y_weight: Any = None, *, global_batch: bool = True
    ) -> Any:
        """The weighted loss value, without adding or logging it.

        With `global_batch` (and a `tf.distribute` replica context) the statistics are
        summed over all replicas, so the value is the loss of the global batch.
        """
        fn = type(self).fn
        kwargs = {"mode": self.mode, "ignore_index": self.ignore_index, **self.options}
        if global_batch:
            value = fn(y_true, y_pred, y_weight, **kwargs)
        else:
            with F.replica_local():
                value = fn(y_true, y_pred, y_weight, **kwargs)
        return value if self.loss_weight == 1.0 else self.loss_weight * value

    def log(self, value: Any, y_pred: Any) -> None:
        """Record `value` in the `<name>_loss` metric."""
        # Weighted by batch size like Keras' own `loss` tracker, so epoch averages add up.
        self.tracker.update_state(value, sample_weight=ops.shape(y_pred)[0])

    def call(self, inputs: Sequence[Any]) -> Any:
        y_true, y_weight, y_pred = _unpack(self.name, inputs)
        # `add_loss` is not safe with a cross-replica sync in the forward pass (see
        # `functional.replica_local`), so a standalone layer normalizes per replica, as
        # Keras' own losses do; `losses.attach` gives exact global-batch losses.
        value = self.compute(y_true, y_pred, y_weight, global_batch=False)
        self.add_loss(value)
        self.log(value, y_pred)
        return value

    def check_num_classes(self, num_classes: int | None) -> None:
        """One-line `ValueError` if `class_weights` / `classes` do not fit `num_classes`."""
        F.check_class_options(
            self.name,
            num_classes,
            class_weights=self.options.get("class_weights"),
            classes=self.options.get("classes"),
        )

    def compute_output_shape(self, input_shape: Any) -> tuple[int, ...]:
        # Called when the layer is applied to symbolic inputs: the model is being built and the
        # logits' channel count is known, so options that must fit it are checked here.
        self.check_num_classes(tuple(input_shape[-1])[-1])
        return ()

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            mode=self.mode,
            ignore_index=self.ignore_index,
            loss_weight=self.loss_weight,
            **self.options,
        )
        return config


class TermLoss(keras.losses.Loss):
    """Base of the `keras.losses.Loss` version of each term (same functional core).

    `sample_weight` may be a per-pixel map (B, H, W) or (B, H, W, 1), or per image (B,);
    it is the `weight` of the functional term, so zero-weight pixels are excluded.
    """

    term: ClassVar[str] = ""
    fn: ClassVar[Callable[..., Any]]
    modes: ClassVar[tuple[str, ...]] = F.MODES

    def __init__(
        self,
        mode: str = F.BINARY,
        ignore_index: int | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        fn = type(self).fn
        options = _split_options(self.term, fn, kwargs)
        if "reduction" in kwargs:
            # The terms normalize themselves (over the global batch under tf.distribute), and
            # the region terms are not sums over pixels, so Keras' reductions cannot apply.
            raise _bad(
                self.term,
                "reduction",
                kwargs["reduction"],
                "no Keras reduction: the loss reduces itself; choose normalization='weighted' "
                "(sum(w*l)/sum(w), the default) or 'mean' (sum(w*l)/count(w>0), Keras' "
                "'sum_over_batch_size' with sample_weight) instead",
            )
        _unknown(self.term, fn, kwargs, ("dtype",))
        _check_common(self.term, mode, ignore_index, self.modes)
        kwargs["dtype"] = "float32"
        super().__init__(name=name or f"{self.term}_loss", **kwargs)
        self.mode = mode
        self.ignore_index = ignore_index
        self.options = options

    def __call__(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        value = type(self).fn(
            y_true,
            y_pred,
            sample_weight,
            mode=self.mode,
            ignore_index=self.ignore_index,
            **self.options,
        )
        return scale_loss_for_distribution(value)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        return type(self).fn(
            y_true, y_pred, mode=self.mode, ignore_index=self.ignore_index, **self.options
        )

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "mode": self.mode,
            "ignore_index": self.ignore_index,
            **self.options,
        }


def scale_loss_for_distribution(value: Any) -> Any:
    """Divide by the replicas in sync, as Keras' own losses do under `tf.distribute`."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        if replicas > 1:
            value = value * (1.0 / replicas)
    return value


# --------------------------------------------------------------------------- terms


def _register(layer_cls: type[LossLayer], loss_cls: type[TermLoss]) -> None:
    for cls in (layer_cls, loss_cls):
        keras.saving.register_keras_serializable(package=PACKAGE)(cls)
    register_loss(layer_cls.term, loss_class=loss_cls, modes=layer_cls.modes)(layer_cls)


_BINARYISH = (F.BINARY, F.MULTILABEL)


class WeightedBCE(LossLayer):
    """Weighted binary cross-entropy on logits, as a loss layer (term `wbce`).

    Options: `pos_weight` (factor on positive pixels, default 1), `label_smoothing` (targets
    move to 0.5 by this fraction), `normalization` ("weighted": sum(w*l)/sum(w), default;
    "mean": sum(w*l)/count(w>0)). Modes: binary, multilabel.

    Example:

    ```python
    image = keras.Input((64, 64, 3), name="image")
    label = keras.Input((64, 64, 1), dtype="int32", name="label")
    weight = keras.Input((64, 64, 1), name="weight")
    logits = keras.layers.Conv2D(1, 3, padding="same")(image)
    loss = WeightedBCE()([label, weight, logits])
    model = keras.Model([image, label, weight], [logits, loss])
    model.compile(optimizer="adam")
    ```

    Reference:
    - The seed article's weighted-BCE loss layer; Ronneberger et al. 2015 (U-Net weight maps).
    """

    term, fn, modes = "wbce", staticmethod(F.wbce), _BINARYISH


class WeightedBCELoss(TermLoss):
    """`keras.losses.Loss` form of `wbce` (per-pixel `sample_weight` maps supported)."""

    term, fn, modes = "wbce", staticmethod(F.wbce), _BINARYISH


class WeightedCE(LossLayer):
    """Weighted sparse categorical cross-entropy on logits, as a loss layer (term `wce`).

    Options: `class_weights` (one factor per class, multiplying the pixel weight),
    `label_smoothing`, `normalization` (as `wbce`). Mode: multiclass.

    Example:

    ```python
    layer = WeightedCE(mode="multiclass", class_weights=[0.5, 1.0, 2.0], ignore_index=255)
    value = layer([mask, weight, logits])
    ```
    """

    term, fn, modes = "wce", staticmethod(F.wce), (F.MULTICLASS,)

    def __init__(self, mode: str = F.MULTICLASS, **kwargs: Any) -> None:
        super().__init__(mode=mode, **kwargs)


class WeightedCELoss(TermLoss):
    """`keras.losses.Loss` form of `wce`."""

    term, fn, modes = "wce", staticmethod(F.wce), (F.MULTICLASS,)

    def __init__(self, mode: str = F.MULTICLASS, **kwargs: Any) -> None:
        super().__init__(mode=mode, **kwargs)


class Focal(LossLayer):
    """Focal loss on logits, as a loss layer (term `focal`).

    Options: `alpha` (positive-class balance in [0, 1], or None; default 0.25), `gamma`
    (focusing exponent >= 0, default 2), `normalization` (as `wbce`). All modes.

    Example:

    ```python
    value = Focal(alpha=0.25, gamma=2.0)([mask, weight, logits])
    ```

    Reference:
    - [Lin et al., 2017](https://arxiv.org/abs/1708.02002)
    """

    term, fn = "focal", staticmethod(F.focal)


class FocalLoss(TermLoss):
    """`keras.losses.Loss` form of `focal`."""

    term, fn = "focal", staticmethod(F.focal)


class Dice(LossLayer):
    """Soft Dice loss on logits, as a loss layer (term `dice`).

    Options: `smooth` (added to numerator and denominator, default 1), `eps` (denominator
    floor, default 1e-7), `reduction` ("batch": statistics over the whole batch, default;
    "image": one score per image, averaged), `classes` (subset of channel indices averaged).
    All modes.

    Example:

    ```python
    value = Dice(mode="multiclass", classes=[1, 2])([mask, weight, logits])
    ```

    Reference:
    - [Milletari et al., 2016](https://arxiv.org/abs/1606.04797)
    """

    term, fn = "dice", staticmethod(F.dice)


class DiceLoss(TermLoss):
    """`keras.losses.Loss` form of `dice`."""

    term, fn = "dice", staticmethod(F.dice)


class Jaccard(LossLayer):
    """Soft Jaccard (IoU) loss on logits, as a loss layer (term `jaccard`).

    Options: `smooth`, `eps`, `reduction`, `classes` (as `dice`). All modes.

    Example:

    ```python
    value = Jaccard()([mask, logits])
    ```

    Reference:
    - [Rahman & Wang, 2016](https://doi.org/10.1007/978-3-319-50835-1_22)
    """

    term, fn = "jaccard", staticmethod(F.jaccard)


class JaccardLoss(TermLoss):
    """`keras.losses.Loss` form of `jaccard`."""

    term, fn = "jaccard", staticmethod(F.jaccard)


class Tversky(LossLayer):
    """(Focal) Tversky loss on logits, as a loss layer (term `tversky`).

    Options: `alpha` (false-positive weight), `beta` (false-negative weight), `gamma`
    (exponent of 1 - TI; 1 = plain Tversky), `smooth`, `eps`, `reduction`, `classes`.
    alpha = beta = 0.5 gives Dice. All modes.

    Example:

    ```python
    value = Tversky(alpha=0.3, beta=0.7, gamma=0.75)([mask, weight, logits])
    ```

    Reference:
    - [Salehi et al., 2017](https://arxiv.org/abs/1706.05721);
      [Abraham & Khan, 2019](https://arxiv.org/abs/1810.07842) (focal Tversky)
    """

    term, fn = "tversky", staticmethod(F.tversky)


class TverskyLoss(TermLoss):
    """`keras.losses.Loss` form of `tversky`."""

    term, fn = "tversky", staticmethod(F.tversky)


for _layer, _loss in (
    (WeightedBCE, WeightedBCELoss),
    (WeightedCE, WeightedCELoss),
    (Focal, FocalLoss),
    (Dice, DiceLoss),
    (Jaccard, JaccardLoss),
    (Tversky, TverskyLoss),
):
    _register(_layer, _loss)
