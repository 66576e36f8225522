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
from collections.abc import Mapping, Sequence
from typing import Any

import keras
from keras import ops

from losses import functional as F
from losses.terms import LOSSES, PACKAGE, LossLayer, _unpack, scale_loss_for_distribution

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


@keras.saving.register_keras_serializable(package=PACKAGE)
class LossTerms(keras.layers.Layer):
    """Computes several loss terms on `[y_true, y_weight, y_pred]` and logs each one.

    Each term is computed over the global batch (all replicas of a `tf.distribute`
    strategy), multiplied by its `loss_weight` and logged as `<name>_loss`. The values are
    returned, not added with `add_loss`: `LossModel.compute_loss` sums them.

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
        self.built = True

    def call(self, inputs: Sequence[Any]) -> Any:
        y_true, y_weight, y_pred = _unpack(self.name, inputs)
        values = []
        for term in self.terms:
            value = term.compute(y_true, y_pred, y_weight)
            term.log(value, y_pred)
            values.append(value)
        # One row per image so `predict` can concatenate batches.
        batch = ops.shape(y_pred)[0]
        return ops.broadcast_to(ops.stack(values)[None], (batch, len(values)))

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
        return (input_shape[-1][0], len(self.terms))

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["terms"] = [keras.saving.serialize_keras_object(t) for t in self.terms]
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class LossModel(keras.Model):
    """Functional training model whose output "losses" (from `LossTerms`) is its loss.

    Built by `attach`; `compute_loss` returns the sum of the term values plus any
    regularization losses, scaled for `tf.distribute` like Keras' own losses.
    """

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
