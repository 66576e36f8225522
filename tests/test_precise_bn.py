"""Precise batch-norm statistics (`trainer.precise_bn_batches`): the plain mean over training
batches, measured before each validation, saved by the best checkpoint, the running statistics
back for training and backups."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from helpers import train_tiny
from omegaconf import OmegaConf

from zoo.layers.blocks import BN_MOMENTUM, batch_norm
from zoo.saving import load_model
from zoo.training import backup as backups
from zoo.training.averaging import ValidateAveragedWeights
from zoo.training.callbacks import BestModelCheckpoint, RunCallbacks
from zoo.training.precise_bn import PreciseBatchNorm, batch_norm_layers, recompute_statistics

ROOT = Path(__file__).resolve().parents[1]


def nested_bn_model() -> keras.Model:
    """Input -> BN -> (a nested model: BN) -> output: the zoo's layer, 4D (the fused path)."""
    inner_in = keras.Input((2, 2, 3))
    inner = keras.Model(inner_in, batch_norm("inner_bn")(inner_in))
    inputs = keras.Input((2, 2, 3))
    return keras.Model(inputs, inner(batch_norm("outer_bn")(inputs)))


def batches(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=(4, 2, 2, 3)) * (i + 1) + 3 * i).astype("float32") for i in range(n)]


def test_recompute_statistics_is_the_plain_mean_over_the_batches():
    model = nested_bn_model()
    layers = batch_norm_layers(model)
    assert len(layers) == 2  # the nested model's layer too
    data = batches(3)
    n = recompute_statistics(lambda x: model(x, training=True), data, layers)
    assert n == 3
    # The first layer sees the raw batches: its statistics are the mean of the batch means
    # and of the (biased) batch variances, not a momentum-weighted blend of them.
    means = np.mean([b.mean((0, 1, 2)) for b in data], 0)
    variances = np.mean([b.var((0, 1, 2)) for b in data], 0)
    np.testing.assert_allclose(layers[0].moving_mean.numpy(), means, rtol=1e-5)
    np.testing.assert_allclose(layers[0].moving_variance.numpy(), variances, rtol=1e-4)
    # The second sees normalized batches: mean 0 and variance ~1 (eps) in each.
    np.testing.assert_allclose(layers[1].moving_mean.numpy(), 0, atol=1e-5)
    np.testing.assert_allclose(layers[1].moving_variance.numpy(), 1, atol=1e-3)
    assert [layer.momentum for layer in layers] == [BN_MOMENTUM, BN_MOMENTUM]


def running_statistics(data: list[np.ndarray], epochs: int) -> tuple[np.ndarray, np.ndarray]:
    """What momentum-0.9 updates leave after `epochs` passes over `data` from (0, 1)."""
    mean, var = np.zeros(3), np.ones(3)
    for _ in range(epochs):
        for b in data:
            mean = BN_MOMENTUM * mean + (1 - BN_MOMENTUM) * b.mean((0, 1, 2))
            var = BN_MOMENTUM * var + (1 - BN_MOMENTUM) * b.var((0, 1, 2))
    return mean, var


class Recorder(keras.callbacks.Callback):
    """The first layer's moving mean while validating and at each epoch end."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer
        self.validated, self.epoch_end = [], []

    def on_test_end(self, logs=None):
        self.validated.append(self.layer.moving_mean.numpy().copy())

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_end.append(self.layer.moving_mean.numpy().copy())


def test_validation_sees_precise_statistics_and_training_the_running_ones(
    one_or_two_replicas, tmp_path
):
    strategy = one_or_two_replicas
    with strategy.scope():
        inputs = keras.Input((2, 2, 3))
        bn = batch_norm("bn")  # synchronized: N replicas keep one device's statistics
        model = keras.Model(inputs, bn(inputs))
        # Learning rate 0: only the moving statistics change, so every value is closed-form.
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0), loss="mse")
    train = batches(2, seed=1)
    measure = batches(3, seed=2)
    recorder = Recorder(bn)
    # More batches than measured: only the first 3 count, at every validation.
    stream = lambda: iter([{"image": b} for b in measure] + [{"image": train[0]}])  # noqa: E731
    precise = PreciseBatchNorm(model, stream, num_batches=3)
    best = BestModelCheckpoint(model, tmp_path / "best.keras", "val_loss", "min")
    x = np.concatenate(train)
    model.fit(
        x, np.zeros_like(x), batch_size=4, epochs=2, shuffle=False, verbose=0,
        validation_data=(x, np.zeros_like(x)), callbacks=[best, precise, recorder],
    )  # fmt: skip
    expected = np.mean([b.mean((0, 1, 2)) for b in measure], 0)
    for seen in recorder.validated:
        np.testing.assert_allclose(seen, expected, rtol=1e-5)
    for epoch, seen in enumerate(recorder.epoch_end):  # put back before the backup reads it
        np.testing.assert_allclose(seen, running_statistics(train, epoch + 1)[0], rtol=1e-5)
    saved = load_model(tmp_path / "best.keras").layers[-1].moving_mean.numpy()
    np.testing.assert_allclose(saved, expected, rtol=1e-5)


def test_precise_statistics_are_measured_after_the_averaged_weights_are_in():
    callbacks = RunCallbacks(
        guard=None, monitors=[], backup=object(), stop=object(),
        averaged=ValidateAveragedWeights(),
        precise=PreciseBatchNorm(nested_bn_model(), lambda: iter(()), 1),
    )  # fmt: skip
    order = [type(cb).__name__ for cb in callbacks.ordered()]
    assert order.index("ValidateAveragedWeights") < order.index("PreciseBatchNorm")
    assert order.index("PreciseBatchNorm") < order.index("object")  # before the backup


def test_num_batches_must_be_positive():
    with pytest.raises(ValueError, match="num_batches=0"):
        PreciseBatchNorm(nested_bn_model(), lambda: iter(()), 0)


def test_bad_precise_bn_batches_is_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "train.py", "trainer.precise_bn_batches=-2", f"hydra.run.dir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "trainer.precise_bn_batches" in proc.stderr and "-2" in proc.stderr
    assert not (tmp_path / "model.keras").exists()


def test_the_saved_model_holds_the_statistics_of_its_own_weights(tmp_path):
    """End to end, with averaged weights: the best checkpoint's batch-norm statistics are the
    mean over the first N training batches under its own (averaged) weights, not the running
    statistics of the raw weights the backup holds."""
    from zoo.data.build import build_datasets

    train_tiny(
        tmp_path, "data.val_size=4", "trainer.val_every_steps=3", "trainer.ema_momentum=0.5",
        "trainer.precise_bn_batches=3",
    )  # fmt: skip
    cfg = OmegaConf.load(tmp_path / "config.yaml")
    saved = load_model(tmp_path / "model.keras")
    layers = batch_norm_layers(saved)
    stored = [(b.moving_mean.numpy().copy(), b.moving_variance.numpy().copy()) for b in layers]
    bundle = build_datasets(cfg.data, int(cfg.data.batch_size), seed=int(cfg.seed))
    stream = (b["image"] for b in bundle.train_at(0).take(3))
    recompute_statistics(lambda x: saved(x, training=True), stream, layers)
    for layer, (mean, var) in zip(layers, stored):
        np.testing.assert_allclose(mean, layer.moving_mean.numpy(), rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(var, layer.moving_variance.numpy(), rtol=1e-3, atol=1e-4)
    # ... and not the raw weights' running statistics, which the backup keeps.
    backup = backups.read_backup(backups.list_backups(tmp_path / "backup")[0])
    state = dict(zip(backup.meta["variables"], backup.arrays, strict=True))
    running = [v for k, v in state.items() if k.endswith("moving_mean")]
    assert running and not any(
        any(r.shape == m.shape and np.allclose(r, m, atol=1e-4) for r in running)
        for m, _ in stored
        if m.size > 8
    )
