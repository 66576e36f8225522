"""Moving average of the weights (`trainer.ema_momentum`): the optimizer's warmed-up average,
the exact swap, validation and the best checkpoint on the average, backups on the raw weights."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from helpers import train_tiny

from zoo import optimizers
from zoo.saving import load_model
from zoo.training import backup as backups
from zoo.training.averaging import ValidateAveragedWeights, swap_averaged_weights
from zoo.training.callbacks import BestModelCheckpoint

ROOT = Path(__file__).resolve().parents[1]


def sgd_steps(steps: int, **kw) -> tuple[float, float]:
    """(weight, average) after `steps` SGD steps of lr 0.1 on loss w (gradient 1) from w = 1."""
    w = keras.Variable(np.ones(1, "float32"))
    opt = optimizers.SGD(learning_rate=0.1, use_ema=True, **kw)
    opt.build([w])
    for _ in range(steps):
        opt.apply([np.ones(1, "float32")], [w])
    return float(w.numpy()[0]), float(opt._model_variables_moving_average[0].numpy()[0])


def test_average_warms_up_hand_worked():
    # Weights 0.9, 0.8, 0.7. Momentum min(0.5, (1+t)/(10+t)) with t the steps before: 0 (a
    # copy), 2/11, 3/12. Average: 0.9; 2/11*0.9 + 9/11*0.8 = 9/11; 0.25*9/11 + 0.75*0.7.
    w, avg = sgd_steps(3, ema_momentum=0.5)
    assert w == pytest.approx(0.7, abs=1e-6)
    assert avg == pytest.approx(0.25 * 9 / 11 + 0.75 * 0.7, abs=1e-6)
    # Without the warm-up it is Keras' average: 0.9; 0.85; 0.5*0.85 + 0.5*0.7.
    _, keras_avg = sgd_steps(3, ema_momentum=0.5, ema_warmup=False)
    assert keras_avg == pytest.approx(0.775, abs=1e-6)


def test_warmed_up_momentum_reaches_the_configured_one():
    # (1+t)/(10+t) reaches 0.9 at t = 80: from that step on the momentum is 0.9, as in Keras.
    assert (1 + 80) / (10 + 80) >= 0.9 > (1 + 79) / (10 + 79)
    _, a0 = sgd_steps(80, ema_momentum=0.9)
    w1, a1 = sgd_steps(81, ema_momentum=0.9)
    assert a1 == pytest.approx(0.9 * a0 + 0.1 * w1, abs=1e-6)


def test_optimizer_config_round_trips_the_warmup():
    opt = optimizers.AdamW(use_ema=True, ema_momentum=0.95, ema_warmup=False)
    again = optimizers.AdamW.from_config(opt.get_config())
    assert (again.use_ema, again.ema_momentum, again.ema_warmup) == (True, 0.95, False)


def closed_form_run(strategy, callbacks_after, tmp_path, momentum=0.9):
    """A one-weight model y = w x with x = 1 and loss |y|: SGD moves w by -lr per step
    (w_t = 1 - 0.01 t) and the validation loss is |w| of the weights validated."""
    with strategy.scope():
        inputs = keras.Input((1,))
        dense = keras.layers.Dense(1, use_bias=False, kernel_initializer="ones")
        model = keras.Model(inputs, dense(inputs))
        model.compile(
            optimizer=optimizers.SGD(learning_rate=0.01, use_ema=True, ema_momentum=momentum),
            loss="mae",
        )
    # Batches of 2: each of two replicas gets one sample (4 steps per epoch either way).
    x, y = np.ones((8, 1), "float32"), np.zeros((8, 1), "float32")
    best = BestModelCheckpoint(model, tmp_path / "best.keras", "val_loss", "min")
    history = model.fit(
        x, y, batch_size=2, epochs=3, validation_data=(x, y), shuffle=False, verbose=0,
        callbacks=[best, ValidateAveragedWeights(), *callbacks_after],
    )  # fmt: skip
    return model, history, best


def expected_averages(steps: int, momentum: float) -> list[float]:
    weights = [1 - 0.01 * (t + 1) for t in range(steps)]
    averages, avg = [], 0.0
    for t, w in enumerate(weights):
        m = 0.0 if t == 0 else min(momentum, (1 + t) / (10 + t))
        avg = m * avg + (1 - m) * w
        averages.append(avg)
    return averages


class Recorder(keras.callbacks.Callback):
    """The kernel at each epoch end, where the backup reads it."""

    def __init__(self):
        super().__init__()
        self.kernels = []

    def on_epoch_end(self, epoch, logs=None):
        self.kernels.append(float(self.model.get_weights()[0].ravel()[0]))


def test_validation_and_best_checkpoint_see_the_average_and_the_backup_the_raw(
    one_or_two_replicas, tmp_path
):
    strategy = one_or_two_replicas
    recorder = Recorder()
    model, history, best = closed_form_run(strategy, [recorder], tmp_path)
    averages = expected_averages(12, 0.9)
    # The validation loss of epoch e is |average| after its 4 steps, not |w| (0.96, 0.92, 0.88).
    np.testing.assert_allclose(history.history["val_loss"], averages[3::4], atol=1e-6)
    assert not np.allclose(history.history["val_loss"], [0.96, 0.92, 0.88], atol=1e-3)
    # After the swap back the model holds the raw weights, and trains on from them.
    np.testing.assert_allclose(recorder.kernels, [0.96, 0.92, 0.88], atol=1e-6)
    assert float(model.get_weights()[0].ravel()[0]) == pytest.approx(0.88, abs=1e-6)
    # The checkpoint (best = last: |average| only falls) holds the average.
    assert best.best_epoch == 2
    saved = load_model(tmp_path / "best.keras").get_weights()[0].ravel()[0]
    assert float(saved) == pytest.approx(averages[-1], abs=1e-6)


def test_swapping_twice_restores_the_weights_bit_for_bit():
    w = keras.Variable(np.float32([0.1, 1 / 3, 1e-8]))
    opt = optimizers.SGD(learning_rate=0.37, use_ema=True, ema_momentum=0.7)
    opt.build([w])
    for g in ([0.3, -0.2, 5.0], [0.1, 0.7, -1.0]):
        opt.apply([np.float32(g)], [w])
    raw, avg = w.numpy().copy(), opt._model_variables_moving_average[0].numpy().copy()
    swap_averaged_weights(opt)
    assert np.array_equal(w.numpy(), avg)
    swap_averaged_weights(opt)
    assert np.array_equal(w.numpy(), raw)
    assert np.array_equal(opt._model_variables_moving_average[0].numpy(), avg)


def test_swap_needs_an_averaging_optimizer():
    with pytest.raises(ValueError, match="use_ema=True"):
        swap_averaged_weights(optimizers.SGD())


def test_without_validation_the_saved_model_is_the_final_average(tmp_path):
    # No validation data, so no best checkpoint: model.keras is the average of the last step,
    # which the last backup holds next to the raw weights it trains from.
    train_tiny(tmp_path, "data.val_size=0", "trainer.ema_momentum=0.5")
    backup = backups.read_backup(backups.list_backups(tmp_path / "backup")[0])
    state = dict(zip(backup.meta["variables"], backup.arrays, strict=True))
    averages = [v for k, v in state.items() if "average" in k]
    saved = load_model(tmp_path / "model.keras")
    kernels = {w.path: w.numpy() for w in saved.trainable_weights}
    assert averages and len(averages) == len(kernels)
    raw = [v for k, v in state.items() if k.split("/")[-1] == "kernel"]
    # Every saved kernel is an average, and none of them is the raw weight.
    avg_set = [a for a in averages if a.ndim == 4]
    for kernel in (k for k in kernels.values() if k.ndim == 4):
        assert any(np.array_equal(kernel, a) for a in avg_set)
        assert not any(np.array_equal(kernel, r) for r in raw if r.shape == kernel.shape)
