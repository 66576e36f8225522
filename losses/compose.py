"""The composition wrapper `attach`, its `LossTerms` layer and `LossModel` training model.

`attach(model, spec)` returns a training model whose inputs are the model's inputs plus
"mask" and "weight"; a `LossTerms` layer inside it computes every term over the global batch
and logs each as `<term>_loss`, and the model's `compute_loss` sums them, so
`compile(optimizer=...)` and `fit(dataset_of_dicts)` train it and `loss` on the progress bar
is the sum of the logged terms (plus regularization losses). A deep-supervised model
(several outputs) gets the same terms on every output, weighted per level (`losses.deep`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras
from keras import ops

from losses.base import PACKAGE, LossLayer, unpack_inputs
from losses.deep import NearestDownsample
from losses.deep import level_weights as weights_per_level
from losses.distribution import scale_loss_for_distribution
from losses.graph_memory import release_custom_gradient_graphs
from losses.labels import LabelGuard, checked_step, labels_checked
from losses.modes import BINARY, MULTICLASS, MULTILABEL, validate_mode
from losses.registry import LOSSES
from losses.spec import parse_terms


@keras.saving.register_keras_serializable(package=PACKAGE)
class LossTerms(keras.layers.Layer):
    """Computes several loss terms on `[y_true, y_weight, y_pred]` and logs each one.

    Each term is computed over the global batch (all replicas of a `tf.distribute`
    strategy), multiplied by its `loss_weight` and logged as `<name>_loss`. The values are
    returned, not added with `add_loss`: `LossModel.compute_loss` sums them. The mask values
    are checked once for all terms (see `losses.labels`); inside a `LossModel` a
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
        self._label_guard = LabelGuard(groups)
        self.built = True

    def call(self, inputs: Sequence[Any]) -> Any:
        y_true, y_weight, y_pred = unpack_inputs(self.name, inputs)
        factor = self._label_guard.check_in_graph(y_true, y_pred.shape[-1])
        values = []
        with labels_checked():
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

    def _guards(self) -> list[LabelGuard]:
        return [
            layer._label_guard for layer in self._flatten_layers() if isinstance(layer, LossTerms)
        ]

    def _raise_if_bad_labels(self) -> None:
        for guard in self._guards():
            guard.raise_if_bad()

    def fit(self, *args: Any, **kwargs: Any) -> Any:
        try:
            history = super().fit(*args, **kwargs)
        finally:
            # TensorFlow's gradient registry would keep this fit's graph (and weights) for
            # the life of the process once the model is gone (losses/graph_memory.py).
            release_custom_gradient_graphs()
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
            optimizer = self.optimizer
            if self._distribute_strategy is None and optimizer is not None and not optimizer.built:
                # Without a strategy Keras builds the optimizer inside the first trace: every
                # slot variable is then created in the graph behind a tf.cond (two branch
                # graphs per variable, traced and optimized with the step). Built eagerly
                # here they are plain variables: the first fit of a U-Net / ResNet-34 (128 px)
                # took 5.7 s instead of 11.2, of a tiny Inception-ResNet-v2 U-Net 34 instead
                # of 123 (2 cores).
                optimizer.build(self.trainable_variables)
            super().make_train_function(force=force)
            self.train_function = checked_step(self.train_function, self._guards())
        return self.train_function

    def make_test_function(self, force: bool = False) -> Any:
        if self.test_function is None or force:
            super().make_test_function(force=force)
            self.test_function = checked_step(self.test_function, self._guards())
        return self.test_function

    def make_predict_function(self, force: bool = False) -> Any:
        if self.predict_function is None or force:
            super().make_predict_function(force=force)
            self.predict_function = checked_step(self.predict_function, self._guards())
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
        return BINARY if channels == 1 else MULTICLASS
    validate_mode(mode)
    if mode == BINARY and channels not in (1, None):
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
    level_weights: Sequence[float] | None = None,
    **term_options: Mapping[str, Any],
) -> keras.Model:
    """Wrap `model` (per-pixel logits) into a training model that carries its own losses.

    Args:
        model: a Keras model whose output is logits of shape (B, H, W, C); or, deep
            supervised, whose outputs are ``[logits, aux_1, ..., aux_n]``: full-resolution
            logits first, then auxiliary logits (B, h_k, w_k, C) at their own resolutions.
        spec: the loss spec (see `parse_spec`), e.g. ``"wbce+dice"`` or ``"0.5*wbce+dice"``.
        mode: "binary", "multiclass" or "multilabel"; None infers binary for 1 channel and
            multiclass otherwise.
        ignore_index: mask value excluded from every term, or None.
        weight: whether the training model has a "weight" input (B, H, W, 1).
        metrics: layers called as ``logits = layer([mask, logits])`` that update metrics in the
            graph and pass the logits through (e.g. `zoo.metrics.MetricsLayer`), so metrics
            reach the targets the same way the loss terms do. They see the full-resolution
            logits only.
        level_weights: with several outputs, the relative weight of each output's loss
            (one per output, non-negative, positive sum; normalized to sum 1). None:
            halving per level, nnU-Net's scheme (1, 1/2, 1/4, ... normalized). Every term
            of the spec is applied to every output with weight (spec weight x level
            weight), against the mask and weight map sampled at the output's size (nearest,
            `losses.deep.NearestDownsample`: labels and `ignore_index` are never averaged).
        **term_options: per-term option dicts keyed by term name, e.g.
            ``wbce={"pos_weight": 2.0}, dice={"smooth": 0.0}``.

    Returns:
        A `keras.Model` with dict inputs: the model's inputs (by name), "mask" (int32,
        (B, H, W, 1), or (B, H, W, C) in multilabel mode) and "weight" (float32, (B, H, W, 1));
        its outputs are {"logits": (B, H, W, C), "losses": (B, num_terms)}. It shares every
        weight with `model`, which stays the
        inference model. Train with ``compile(optimizer=...)`` and ``fit(dataset)``; each term
        is logged as `<term>_loss` (already multiplied by its spec weight), and `loss` is their
        sum plus the model's regularization losses. With several outputs the terms of
        output k > 0 are logged as `<term>_aux<k>_loss` and those of the full-resolution
        output as `<term>_loss`, each already multiplied by its level weight, so they still
        add up to `loss`; `logits` are the full-resolution ones.

    Example:

    ```python
    model = zoo.create_model("unet", num_classes=1, input_shape=(64, 64, 3))
    train_model = losses.attach(model, "wbce+dice", wbce={"pos_weight": 2.0})
    train_model.compile(optimizer="adam")
    train_model.fit(dataset)  # dicts {"image", "mask", "weight"}
    ```
    """
    if not isinstance(model, keras.Model) or not model.outputs:
        raise ValueError(
            "Invalid value for argument `model`: expected a built functional keras.Model whose "
            f"outputs are per-pixel logits. Received: model={model!r}"
        )
    pairs = parse_terms(spec)
    shapes = [tuple(t.shape) for t in model.outputs]
    logits_shape = shapes[0]
    if any(len(s) != 4 or s[-1] != logits_shape[-1] for s in shapes):
        raise ValueError(
            "Invalid value for argument `model`: its outputs must be per-pixel logits "
            f"(B, H, W, C) with the same C. Received output shapes {shapes}"
        )
    if level_weights is not None and len(shapes) == 1:
        raise ValueError(
            "Invalid value for argument `level_weights`: the model has one output (no deep "
            f"supervision); pass None. Received: level_weights={level_weights!r}"
        )
    weights = _level_weights(len(shapes), level_weights)
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
    levels = [(k, _at_level(layers, k, w)) for k, w in enumerate(weights) if w > 0]

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
    mask_channels = channels if mode == MULTILABEL else 1
    inputs = dict(model_inputs)
    inputs["mask"] = keras.Input((height, width, mask_channels), dtype="int32", name="mask")
    args = list(model_inputs.values())
    predictions = model(args[0] if len(args) == 1 else args)
    predictions = list(predictions) if len(shapes) > 1 else [predictions]
    logits = predictions[0]
    for layer in metrics or ():
        logits = layer([inputs["mask"], logits])
    predictions[0] = logits
    if weight:
        inputs["weight"] = keras.Input((height, width, 1), dtype="float32", name="weight")
    values = []
    for k, level_layers in levels:
        targets = [inputs["mask"], inputs["weight"]] if weight else [inputs["mask"]]
        if k > 0:  # the targets at this output's size
            targets = [
                NearestDownsample(name=f"{n}_aux{k}")([t, predictions[k]])
                for n, t in zip(("mask", "weight"), targets)
            ]
        name = "loss_terms" if k == 0 else f"loss_terms_aux{k}"
        values.append(LossTerms(level_layers, name=name)([*targets, predictions[k]]))
    if len(values) > 1:
        values = [keras.layers.Concatenate(name="loss_levels", dtype="float32")(values)]
    outputs = {"logits": logits, "losses": values[0]}
    return LossModel(inputs, outputs, name=f"{model.name}_train")


def _level_weights(num_outputs: int, weights: Sequence[float] | None) -> list[float]:
    return [1.0] if num_outputs == 1 else weights_per_level(num_outputs, weights)


def _at_level(layers: Sequence[LossLayer], level: int, weight: float) -> list[LossLayer]:
    """The terms for output `level`: weighted by `weight`, named `<term>_aux<level>`."""
    if level == 0 and weight == 1.0:
        return list(layers)
    out = []
    for layer in layers:
        config = {**layer.get_config(), "loss_weight": layer.loss_weight * weight}
        if level > 0:
            config["name"] = f"{layer.name}_aux{level}"
        out.append(type(layer).from_config(config))
    return out
