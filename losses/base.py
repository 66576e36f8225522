"""The two forms of a loss term: a Keras loss *layer* and its `keras.losses.Loss` twin.

A term file (e.g. `losses/dice.py`) holds the pure function, its option table
(`losses.options`) and a `LossLayer` subclass naming the three, decorated with
`register_term`, which derives the `keras.losses.Loss` twin (`Dice` -> `DiceLoss`), makes both
serializable as `segzoo_losses>Dice` / `segzoo_losses>DiceLoss` and registers the term.

A loss layer receives targets and weights as graph inputs, the way the seed article did it:
`WeightedBCE()([y_true, y_weight, y_pred])` (or `[y_true, y_pred]`), registers the value with
`add_loss` and records it in a `keras.metrics.Mean` named `<name>_loss` so it shows on the
progress bar. The twin computes the same number from `compile(loss=...)` with an optional
per-pixel `sample_weight` map.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import keras
from keras import ops

from losses.distribution import replica_local, scale_loss_for_distribution
from losses.modes import MODES, validate_mode
from losses.options import (
    Check,
    check_ignore_index,
    check_table,
    invalid,
    positive,
    refuse_unknown,
    take_options,
)
from losses.registry import register_loss

PACKAGE = "segzoo_losses"


def unpack_inputs(name: str, inputs: Sequence[Any]) -> tuple[Any, Any, Any]:
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

    Subclasses set `term` (the registry name), `fn` (the pure function), `modes` (the first is
    the default) and `option_checks` (the term's option table, see `losses.options`).

    Args:
        mode: "binary", "multiclass" or "multilabel" (see `losses.modes`); None: the term's
            first mode (multiclass for `wce`, binary for the others).
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
    modes: ClassVar[tuple[str, ...]] = MODES
    option_checks: ClassVar[Mapping[str, Check]] = {}
    loss_class: ClassVar[type[TermLoss]]  # the derived twin, set by `register_term`

    def __init__(
        self,
        mode: str | None = None,
        ignore_index: int | None = None,
        loss_weight: float = 1.0,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        cls = type(self)
        mode = cls.modes[0] if mode is None else mode
        options = take_options(self.term, cls.fn, cls.option_checks, kwargs)
        refuse_unknown(self.term, cls.fn, kwargs, ("dtype", "trainable", "autocast"))
        validate_mode(mode, self.modes, self.term)
        check_ignore_index(self.term, ignore_index)
        loss_weight = positive(self.term, "loss_weight", loss_weight)
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
            with replica_local():
                value = fn(y_true, y_pred, y_weight, **kwargs)
        return value if self.loss_weight == 1.0 else self.loss_weight * value

    def log(self, value: Any, y_pred: Any) -> None:
        """Record `value` in the `<name>_loss` metric."""
        # Weighted by batch size like Keras' own `loss` tracker, so epoch averages add up.
        self.tracker.update_state(value, sample_weight=ops.shape(y_pred)[0])

    def call(self, inputs: Sequence[Any]) -> Any:
        y_true, y_weight, y_pred = unpack_inputs(self.name, inputs)
        # `add_loss` is not safe with a cross-replica sync in the forward pass (see
        # `losses.distribution.replica_local`), so a standalone layer normalizes per replica,
        # as Keras' own losses do; `losses.attach` gives exact global-batch losses.
        value = self.compute(y_true, y_pred, y_weight, global_batch=False)
        self.add_loss(value)
        self.log(value, y_pred)
        return value

    def check_num_classes(self, num_classes: int | None) -> None:
        """One-line `ValueError` if an option sized by class (`class_weights`, `classes`) does
        not fit `num_classes` channels."""
        for key, check in type(self).option_checks.items():
            check.fits(self.name, key, self.options.get(key), num_classes)

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
    """Base of the `keras.losses.Loss` form of each term (same pure function as the layer).

    `register_term` derives one per layer class; its `term`, `fn`, `modes` and
    `option_checks` are the layer's. `sample_weight` may be a per-pixel map (B, H, W) or
    (B, H, W, 1), or per image (B,); it is the `weight` of the pure function, so zero-weight
    pixels are excluded.
    """

    term: ClassVar[str] = ""
    fn: ClassVar[Callable[..., Any]]
    modes: ClassVar[tuple[str, ...]] = MODES
    option_checks: ClassVar[Mapping[str, Check]] = {}

    def __init__(
        self,
        mode: str | None = None,
        ignore_index: int | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        cls = type(self)
        mode = cls.modes[0] if mode is None else mode
        options = take_options(self.term, cls.fn, cls.option_checks, kwargs)
        if "reduction" in kwargs:
            # The terms normalize themselves (over the global batch under tf.distribute), and
            # the region terms are not sums over pixels, so Keras' reductions cannot apply.
            raise invalid(
                self.term,
                "reduction",
                kwargs["reduction"],
                "no Keras reduction: the loss reduces itself; choose normalization='weighted' "
                "(sum(w*l)/sum(w), the default) or 'mean' (sum(w*l)/count(w>0), Keras' "
                "'sum_over_batch_size' with sample_weight) instead",
            )
        refuse_unknown(self.term, cls.fn, kwargs, ("dtype",))
        validate_mode(mode, self.modes, self.term)
        check_ignore_index(self.term, ignore_index)
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


def derive_loss_class(layer_cls: type[LossLayer]) -> type[TermLoss]:
    """The `keras.losses.Loss` twin of a loss-layer class, named `<Layer>Loss`."""
    name = f"{layer_cls.__name__}Loss"
    doc = (
        f"`keras.losses.Loss` form of `{layer_cls.term}`, derived from `{layer_cls.__name__}`: "
        "the same pure function,\noptions and modes (see its docstring), for "
        "`compile(loss=...)`; `sample_weight` may be a per-pixel map."
    )
    namespace = {
        "__module__": layer_cls.__module__,
        "__qualname__": name,
        "__doc__": doc,
        "term": layer_cls.term,
        "fn": staticmethod(layer_cls.fn),
        "modes": layer_cls.modes,
        "option_checks": layer_cls.option_checks,
        "layer_class": layer_cls,
    }
    return type(name, (TermLoss,), namespace)


def register_term(layer_cls: type[LossLayer]) -> type[LossLayer]:
    """Class decorator for a loss-term layer: check its option table against its function,
    derive its `keras.losses.Loss` twin (`layer_cls.loss_class`), make both serializable
    (package `segzoo_losses`) and register the term under `layer_cls.term`.

    Example:

    ```python
    @register_term
    class Dice(LossLayer):
        term, fn, modes, option_checks = "dice", staticmethod(dice), MODES, OPTIONS

    DiceLoss = Dice.loss_class
    ```
    """
    check_table(layer_cls.term, layer_cls.fn, layer_cls.option_checks)
    loss_cls = derive_loss_class(layer_cls)
    layer_cls.loss_class = loss_cls
    for cls in (layer_cls, loss_cls):
        keras.saving.register_keras_serializable(package=PACKAGE)(cls)
    register_loss(layer_cls.term, loss_class=loss_cls, modes=layer_cls.modes)(layer_cls)
    return layer_cls
