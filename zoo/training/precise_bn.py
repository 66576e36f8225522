"""Batch-norm statistics measured for the weights being validated (`trainer.precise_bn_batches`).

While a model trains, each batch-norm layer's moving mean and variance follow the last ~10
batches (momentum 0.9): on a small, varied training set they swing from one validation to the
next, and under `trainer.ema_momentum` they describe the raw weights rather than the averaged
ones that are validated (Keras averages the trainable variables only). `PreciseBatchNorm`
runs N training batches forward before each validation (training mode, no gradient, after the
averaged weights are in) and sets every layer's statistics to their plain mean over those
batches ("precise BN"); the best checkpoint saves them. After the epoch's callbacks it puts
the running statistics back, so training, backups and resumed runs are unchanged.

Reference: Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021 (section 3, precise BN).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import Any

import keras
import numpy as np


def batch_norm_layers(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    """Every trainable batch-norm layer of `model`, nested models included."""
    return [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable
    ]


def recompute_statistics(
    forward: Callable[[Any], Any], batches: Iterable[Any], layers: list[Any]
) -> int:
    """Set `layers`' moving mean/variance to their mean over `batches`; returns the count.

    `forward(batch)` runs the model in training mode (it may be a `tf.function`). With every
    layer's momentum at 0 during the pass, each forward leaves one batch's statistics in the
    moving variables, which are summed here; a function traced within the pass has momentum
    0 built in, and the layers get their own momentum back at the end.
    """
    momenta = [layer.momentum for layer in layers]
    sums = [[0.0, 0.0] for _ in layers]
    n = 0
    try:
        for layer in layers:
            layer.momentum = 0.0
        for batch in batches:
            forward(batch)
            for s, layer in zip(sums, layers):
                s[0] = s[0] + layer.moving_mean.numpy().astype(np.float64)
                s[1] = s[1] + layer.moving_variance.numpy().astype(np.float64)
            n += 1
    finally:
        for layer, m in zip(layers, momenta):
            layer.momentum = m
    if n:
        for (mean, var), layer in zip(sums, layers):
            layer.moving_mean.assign((mean / n).astype(layer.moving_mean.dtype))
            layer.moving_variance.assign((var / n).astype(layer.moving_variance.dtype))
    return n


class PreciseBatchNorm(keras.callbacks.Callback):
    """Recompute the batch-norm statistics over `num_batches` training batches before each
    validation; the running ones are back at the epoch end.

    Place it after `ValidateAveragedWeights` (the statistics are measured for the averaged
    weights) and before the backup.

    Args:
        model: the inference model (image batch -> logits) whose layers are measured.
        batches: `batches()` returns an iterable of training batches (dicts with "image"),
            called once: its first `num_batches` images are kept (in memory) and measured
            at every validation.
        num_batches: how many batches to measure.
    """

    def __init__(self, model: keras.Model, batches: Callable[[], Iterable[Any]], num_batches: int):
        super().__init__()
        if num_batches < 1:
            raise ValueError(
                "Invalid value for argument `num_batches`: expected an int >= 1. "
                f"Received: num_batches={num_batches!r}"
            )
        self.inference_model = model
        self.batches = batches
        self.num_batches = int(num_batches)
        self.layers = batch_norm_layers(model)
        self.saved: list[tuple[Any, Any]] | None = None
        self.forward: Any = None
        self.images: list[Any] | None = None

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self.saved is not None or not self.layers:
            return
        self.saved = [(b.moving_mean.numpy(), b.moving_variance.numpy()) for b in self.layers]
        if self.forward is None:  # traced at the first call, inside the pass (momentum 0)
            import tensorflow as tf  # the zoo trains on the TensorFlow backend

            model = self.inference_model
            self.forward = tf.function(lambda x: model(x, training=True), reduce_retracing=True)
        if self.images is None:
            # The same batches every time, kept in memory: statistics measured on other
            # batches at each validation would add their own noise to the curve.
            take = itertools.islice(self.batches(), self.num_batches)
            self.images = [b["image"] for b in take]
        recompute_statistics(self.forward, self.images, self.layers)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.restore()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self.restore()

    def restore(self) -> None:
        if self.saved is None:
            return
        for layer, (mean, var) in zip(self.layers, self.saved):
            layer.moving_mean.assign(mean)
            layer.moving_variance.assign(var)
        self.saved = None
