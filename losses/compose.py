"""Loss specs ("0.5*wbce+dice") and the composition wrapper `attach`.

`attach(model, spec)` returns a training model whose inputs are the model's inputs plus
"mask" and "weight"; a `LossTerms` layer inside it computes every term over the global batch
and logs each as `<term>_loss`, and the model's `compute_loss` sums them, so
`compile(optimizer=...)` and `fit(dataset_of_dicts)` train it and `loss` on the progress bar
is the sum of the logged terms (plus regularization losses).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

import keras
from keras import ops

from losses import functional as F
from losses.registry import LOSSES
from losses.terms import PACKAGE, LossLayer, _unpack, scale_loss_for_distribution

_SYNTAX = "e.g. 'wbce+dice', '0.5*wbce + 2*dice', ['wbce', 'dice'], [(0.5, 'wbce'), 'dice']"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _spec_error(spec: Any, reason: str) -> ValueError:
    return ValueError(
        f"Invalid loss spec {spec!r}: {reason}. Valid terms: {', '.join(LOSSES.list())} "
        f"({_SYNTAX})."
    )


def _weight(spec: Any, text: Any) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise _spec_error(spec, f"weight {text!r} is not a number") from None
    if isinstance(text, bool) or not math.isfinite(value) or value <= 0:
        raise _spec_error(spec, f"weight {text!r} must be a finite number > 0")
    return value


def _parse_string(spec: Any, text: str) -> list[tuple[float, str]]:
    out = []
    for part in text.split("+"):
        part = part.strip()
        if not part:
            raise _spec_error(spec, f"empty term in {text!r}")
        if "*" in part:
            pieces = [p.strip() for p in part.split("*")]
            if len(pieces) != 2:
                raise _spec_error(spec, f"term {part!r} is not of the form 'weight*name'")
            weight, name = _weight(spec, pieces[0]), pieces[1]
        else:
            weight, name = 1.0, part
        if not _NAME.match(name):
            raise _spec_error(spec, f"term {part!r} is not of the form 'weight*name'")
        if name not in LOSSES:
            raise _spec_error(spec, f"unknown term {name!r}")
        out.append((weight, name))
    return out


def _parse(spec: Any) -> list[tuple[float, str | LossLayer]]:
    """(weight, name or layer) pairs, duplicates of a name merged by adding their weights."""
    if isinstance(spec, str):
        items: list[Any] = [spec]
    elif isinstance(spec, LossLayer):
        items = [spec]
    elif isinstance(spec, Sequence) and not isinstance(spec, bytes) and len(spec) > 0:
        items = list(spec)  # also Hydra's ListConfig
    else:
        raise _spec_error(spec, "expected a string, a term layer or a non-empty list of them")
    pairs: list[tuple[float, str | LossLayer]] = []
    for item in items:
        if isinstance(item, str):
            pairs.extend(_parse_string(spec, item))
        elif isinstance(item, LossLayer):
            pairs.append((1.0, item))
        elif isinstance(item, Sequence) and not isinstance(item, str) and len(item) == 2:
            weight, term = item
            weight = _weight(spec, weight)
            for w, t in _parse([term]) if isinstance(term, str | LossLayer) else [(0, None)]:
                if t is None:
                    raise _spec_error(spec, f"{term!r} is not a term name or layer")
                pairs.append((weight * w, t))
        else:
            raise _spec_error(spec, f"{item!r} is not a term name, layer or (weight, term) pair")
    merged: dict[str, list[Any]] = {}
    for weight, term in pairs:
        key = term if isinstance(term, str) else term.name
        if key in merged:
            if not (isinstance(term, str) and isinstance(merged[key][1], str)):
                raise _spec_error(spec, f"two terms are named {key!r}; give layers unique names")
            merged[key][0] += weight
        else:
            merged[key] = [weight, term]
    return [(w, t) for w, t in merged.values()]


def parse_spec(spec: Any) -> list[tuple[float, str]]:
    """Parse a loss spec into `(weight, term name)` pairs, in order of first appearance.

    Accepted: ``"wbce+dice"``, ``"0.5*wbce + 2*dice"``, ``["wbce", "dice"]`` (also Hydra's
    ListConfig), ``[(0.5, "wbce"), "dice"]``, and loss-layer objects (named by `layer.name`).
    A name given twice has its weights added (``"dice+dice"`` is ``"2*dice"``). Unknown terms,
    weights that are not finite numbers > 0 and malformed specs raise one `ValueError` that
    shows the spec and the valid terms.

    Example:

    ```python
    losses.parse_spec("0.5*wbce+dice")  # [(0.5, "wbce"), (1.0, "dice")]
    ```
    """
    return [(w, t if isinstance(t, str) else t.name) for w, t in _parse(spec)]


# Seconds between host-side reads of the recorded mask ranges in fit/evaluate/predict loops.
_CHECK_EVERY_S = 0.5


def _is_iterator(value: Any) -> bool:
    """Whether a step function got a dataset iterator (fit/evaluate/predict loops)."""
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return isinstance(value, tf.data.Iterator | tf.distribute.DistributedIterator)


class _LabelGuard:
    """Mask-range check of `LossTerms`, made to raise a one-line error under XLA too.

    While a `LossModel` runs a step (`host_check` set), each replica records the min/max mask
    value of the batch in a per-replica variable and a bad batch contributes 0 to the loss;
    `raise_if_bad` then reads the variables on the host after the step and raises the
    `ValueError` of `functional.label_error`. Outside a `LossModel` step the check of
    `functional.check_labels` applies (an eager `ValueError`, a graph `Assert`, NaN under XLA).
    """

    def __init__(self, groups: Mapping[tuple[str, int | None], list[str]]) -> None:
        self.groups = dict(groups)
        self.host_check = False
        self.num_classes: int | None = None
        self.ranges = None
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            # ON_READ: each replica writes its own copy, no cross-replica traffic in the step.
            self.ranges = [
                tf.Variable(
                    tf.zeros(2),
                    trainable=False,
                    synchronization=tf.VariableSynchronization.ON_READ,
                    aggregation=tf.VariableAggregation.SUM,
                    name="mask_range",
                )
                for _ in self.groups
            ]

    def check_in_graph(self, y_true: Any, num_classes: int | None) -> Any:
        self.num_classes = num_classes
        factor = None
        for i, ((mode, ignore_index), names) in enumerate(self.groups.items()):
            record = None
            if self.host_check and self.ranges is not None:
                record = self._recorder(self.ranges[i])
            f = F.check_labels(
                y_true,
                mode=mode,
                num_classes=num_classes,
                ignore_index=ignore_index,
                term=names,
                record=record,
            )
            if f is not None:
                factor = f if factor is None else factor * f
        return factor

    @staticmethod
    def _recorder(var: Any) -> Any:
        def record(lo: Any, hi: Any) -> None:
            var.assign(ops.stack([ops.minimum(var[0], lo), ops.maximum(var[1], hi)]))

        return record

    def raise_if_bad(self) -> None:
        """Raise the one-line `ValueError` if a recorded mask range is invalid (then reset)."""
        if self.ranges is None:
            return
        import tensorflow as tf

        for var, ((mode, ignore_index), names) in zip(self.ranges, self.groups.items()):
            strategy = getattr(var, "distribute_strategy", None) or tf.distribute.get_strategy()
            parts = [p.numpy() for p in strategy.experimental_local_results(var)]
            lo, hi = min(float(p[0]) for p in parts), max(float(p[1]) for p in parts)
            message = F.label_error(
                lo,
                hi,
                mode=mode,
                num_classes=self.num_classes,
                ignore_index=ignore_index,
                term=names,
            )
            if message:
                for v in self.ranges:
                    v.assign(tf.zeros(2))
                raise ValueError(message)


@keras.saving.register_keras_serializable(package=PACKAGE)
class LossTerms(keras.layers.Layer):
    """Computes several loss terms on `[y_true, y_weight, y_pred]` and logs each one.

    Each term is computed over the global batch (all replicas of a `tf.distribute`
    strategy), multiplied by its `loss_weight` and logged as `<name>_loss`. The values are
    returned, not added with `add_loss`: `LossModel.compute_loss` sums them. The mask values
    are checked once for all terms (see `functional.check_labels`); inside a `LossModel` a
    bad mask ends in a one-line `ValueError` after the step, under XLA too.

    Args:
        terms: list of loss layers (`losses.get(...)` or the term classes).

    Call arguments:
        inputs: `[y_true, y_weight, y_pred]` or `[y_true, y_pred]`.

    Returns:
        A (B, num_terms) tensor: every row holds the batch's term values.

    Example:

    ```python
    terms = LossTerms([losses.get("wbce", loss_weight=0.5), losses.get("dice")])
    values = terms([mask, weight, logits])
    ```
    """

    def __init__(self, terms: Sequence[LossLayer], **kwargs: Any) -> None:
        terms = [
            keras.saving.deserialize_keras_object(t) if isinstance(t, Mapping) else t for t in terms
        ]
        if not terms or not all(isinstance(t, LossLayer) for t in terms):
            raise ValueError(
                "Invalid value for argument `terms`: expected a non-empty list of loss layers. "
                f"Received: terms={terms!r}"
            )
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.terms = list(terms)
        # One mask check per (mode, ignore_index) the terms use, shared by those terms.
        groups: dict[tuple[str, int | None], list[str]] = {}
        for term in self.terms:
            groups.setdefault((term.mode, term.ignore_index), []).append(term.name)
        # A plain holder: its variables are neither weights nor checkpointed.
        self._label_guard = _LabelGuard(groups)
        self.built = True

    def call(self, inputs: Sequence[Any]) -> Any:
        y_true, y_weight, y_pred = _unpack(self.name, inputs)
        factor = self._label_guard.check_in_graph(y_true, y_pred.shape[-1])
        values = []
        with F.labels_checked():
            for term in self.terms:
                value = term.compute(y_true, y_pred, y_weight)
                if factor is not None:
                    value = value * factor
                term.log(value, y_pred)
                values.append(value)
        # One row per image so `predict` can concatenate batches.
        batch = ops.shape(y_pred)[0]
        return ops.broadcast_to(ops.stack(values)[None], (batch, len(values)))

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
        for term in self.terms:  # the model is being built: the channel count is known
            term.check_num_classes(tuple(input_shape[-1])[-1])
        return (input_shape[-1][0], len(self.terms))

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["terms"] = [keras.saving.serialize_keras_object(t) for t in self.terms]
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class LossModel(keras.Model):
    """Functional training model whose output "losses" (from `LossTerms`) is its loss.

    Built by `attach`; `compute_loss` returns the sum of the term values plus any
    regularization losses, scaled for `tf.distribute` like Keras' own losses. After every
    train / test / predict step (or `steps_per_execution` steps) it checks the mask values the
    `LossTerms` layers recorded and raises a one-line `ValueError` for values outside the
    valid range (an in-graph `Assert` cannot raise under XLA).
    """

    def _guards(self) -> list[_LabelGuard]:
        return [
            layer._label_guard for layer in self._flatten_layers() if isinstance(layer, LossTerms)
        ]

    def _raise_if_bad_labels(self) -> None:
        for guard in self._guards():
            guard.raise_if_bad()

    def _checked(self, function: Any) -> Any:
        if function is None or getattr(function, "_segzoo_checked", False):
            return function
        guards = self._guards()
        last = [-math.inf]

        def checked(*args: Any, **kwargs: Any) -> Any:
            # Set while tracing too: the traced step records mask ranges for the host check.
            for guard in guards:
                guard.host_check = True
            try:
                outputs = function(*args, **kwargs)
            finally:
                for guard in guards:
                    guard.host_check = False
            # Reading the ranges costs a host round trip (~0.1 ms): done on the first step and
            # then at most every _CHECK_EVERY_S in fit/evaluate/predict loops (which check once
            # more when they end); *_on_batch calls always check. A bad batch meanwhile
            # contributes 0 to the loss, so nothing is learned from it.
            now = time.monotonic()
            if not _is_iterator(args[0] if args else None) or now - last[0] >= _CHECK_EVERY_S:
                last[0] = now
                for guard in guards:
                    guard.raise_if_bad()
            return outputs

        checked._segzoo_checked = True
        return checked

    def fit(self, *args: Any, **kwargs: Any) -> Any:
        history = super().fit(*args, **kwargs)
        self._raise_if_bad_labels()
        return history

    def evaluate(self, *args: Any, **kwargs: Any) -> Any:
        result = super().evaluate(*args, **kwargs)
        self._raise_if_bad_labels()
        return result

    def predict(self, *args: Any, **kwargs: Any) -> Any:
        result = super().predict(*args, **kwargs)
        self._raise_if_bad_labels()
        return result

    def make_train_function(self, force: bool = False) -> Any:
        if self.train_function is None or force:
            super().make_train_function(force=force)
            self.train_function = self._checked(self.train_function)
        return self.train_function

    def make_test_function(self, force: bool = False) -> Any:
        if self.test_function is None or force:
            super().make_test_function(force=force)
            self.test_function = self._checked(self.test_function)
        return self.test_function

    def make_predict_function(self, force: bool = False) -> Any:
        if self.predict_function is None or force:
            super().make_predict_function(force=force)
            self.predict_function = self._checked(self.predict_function)
        return self.predict_function

    def compute_loss(
        self,
        x: Any = None,
        y: Any = None,
        y_pred: Any = None,
        sample_weight: Any = None,
        training: bool = True,
    ) -> Any:
        total = scale_loss_for_distribution(ops.sum(y_pred["losses"][0]))
        for loss in self.losses:  # regularization (and any add_loss) losses
            total = total + scale_loss_for_distribution(ops.sum(ops.cast(loss, "float32")))
        return total


def _infer_mode(mode: str | None, channels: int | None) -> str:
    if mode is None:
        return F.BINARY if channels == 1 else F.MULTICLASS
    F.validate_mode(mode)
    if mode == F.BINARY and channels not in (1, None):
        raise ValueError(
            f"Invalid value for argument `mode`: 'binary' needs 1 output channel, the model "
            f"has {channels}. Use mode='multiclass' or 'multilabel'. Received: mode={mode!r}"
        )
    return mode


def attach(
    model: keras.Model,
    spec: Any,
    *,
    mode: str | None = None,
    ignore_index: int | None = None,
    weight: bool = True,
    metrics: Sequence[keras.layers.Layer] | None = None,
    **term_options: Mapping[str, Any],
) -> keras.Model:
    """Wrap `model` (per-pixel logits) into a training model that carries its own losses.

    Args:
        model: a Keras model with one output, logits of shape (B, H, W, C).
        spec: the loss spec (see `parse_spec`), e.g. ``"wbce+dice"`` or ``"0.5*wbce+dice"``.
        mode: "binary", "multiclass" or "multilabel"; None infers binary for 1 channel and
            multiclass otherwise.
        ignore_index: mask value excluded from every term, or None.
        weight: whether the training model has a "weight" input (B, H, W, 1).
        metrics: layers called as ``logits = layer([mask, logits])`` that update metrics in the
            graph and pass the logits through (e.g. `zoo.metrics.MetricsLayer`), so metrics
            reach the targets the same way the loss terms do.
        **term_options: per-term option dicts keyed by term name, e.g.
            ``wbce={"pos_weight": 2.0}, dice={"smooth": 0.0}``.

    Returns:
        A `keras.Model` with dict inputs: the model's inputs (by name), "mask" (int32,
        (B, H, W, 1), or (B, H, W, C) in multilabel mode) and "weight" (float32, (B, H, W, 1));
        its outputs are {"logits": (B, H, W, C), "losses": (B, num_terms)}. It shares every
        weight with `model`, which stays the
        inference model. Train with ``compile(optimizer=...)`` and ``fit(dataset)``; each term
        is logged as `<term>_loss` (already multiplied by its spec weight), and `loss` is their
        sum plus the model's regularization losses.

    Example:

    ```python
    model = zoo.create_model("unet", num_classes=1, input_shape=(64, 64, 3))
    train_model = losses.attach(model, "wbce+dice", wbce={"pos_weight": 2.0})
    train_model.compile(optimizer="adam")
    train_model.fit(dataset)  # dicts {"image", "mask", "weight"}
    ```
    """
    if not isinstance(model, keras.Model) or len(model.outputs or []) != 1:
        raise ValueError(
            "Invalid value for argument `model`: expected a built functional keras.Model with "
            f"exactly one output (per-pixel logits). Received: model={model!r}"
        )
    pairs = _parse(spec)
    logits_shape = tuple(model.outputs[0].shape)
    if len(logits_shape) != 4:
        raise ValueError(
            "Invalid value for argument `model`: its output must be per-pixel logits "
            f"(B, H, W, C). Received output shape {logits_shape}"
        )
    mode = _infer_mode(mode, logits_shape[-1])
    names = [t for _, t in pairs if isinstance(t, str)]
    for key, options in term_options.items():
        if key not in names:
            raise ValueError(
                f"Options given for loss term {key!r}, which is not a named term of the spec "
                f"{spec!r}. Terms in the spec: {names}"
            )
        if not isinstance(options, Mapping):
            raise ValueError(
                f"Options of loss term {key!r} must be a dict of option values. "
                f"Received: {key}={options!r}"
            )
    layers = []
    for w, term in pairs:
        if isinstance(term, str):
            opts = dict(term_options.get(term, {}))
            layers.append(
                LOSSES.get(term).obj(mode=mode, ignore_index=ignore_index, loss_weight=w, **opts)
            )
        elif w != 1.0:
            config = {**term.get_config(), "loss_weight": w * term.loss_weight}
            layers.append(type(term).from_config(config))
        else:
            layers.append(term)
    for layer in layers:
        layer.check_num_classes(logits_shape[-1])

    reserved = {"mask", "weight"}
    model_inputs = {}
    for tensor in model.inputs:
        name = tensor.name
        if name in reserved:
            raise ValueError(
                f"The model has an input named {name!r}, which `attach` reserves for the "
                f"targets. Rename the input (reserved names: {sorted(reserved)})."
            )
        model_inputs[name] = keras.Input(
            shape=tuple(tensor.shape[1:]), dtype=tensor.dtype, name=name
        )
    height, width, channels = logits_shape[1:]
    mask_channels = channels if mode == F.MULTILABEL else 1
    inputs = dict(model_inputs)
    inputs["mask"] = keras.Input((height, width, mask_channels), dtype="int32", name="mask")
    args = list(model_inputs.values())
    logits = model(args[0] if len(args) == 1 else args)
    for layer in metrics or ():
        logits = layer([inputs["mask"], logits])
    if weight:
        inputs["weight"] = keras.Input((height, width, 1), dtype="float32", name="weight")
        targets = [inputs["mask"], inputs["weight"], logits]
    else:
        targets = [inputs["mask"], logits]
    values = LossTerms(layers, name="loss_terms")(targets)
    outputs = {"logits": logits, "losses": values}
    return LossModel(inputs, outputs, name=f"{model.name}_train")
