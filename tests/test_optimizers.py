"""zoo.optimizers.Adam / AdamW: the fused update equals Adam's formula, computed in NumPy."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from zoo import optimizers


def numpy_adam(w, grads, lr, wd=0.0, b1=0.9, b2=0.999, eps=1e-7):
    """Adam (Kingma & Ba, bias correction folded into the step) with decoupled weight decay
    applied before each update, as Keras' AdamW does."""
    w = w.astype(np.float64)
    m, v = np.zeros_like(w), np.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        w = w - w * wd * lr
        m = m + (g - m) * (1 - b1)
        v = v + (g * g - v) * (1 - b2)
        w = w - lr * np.sqrt(1 - b2**t) / (1 - b1**t) * m / (np.sqrt(v) + eps)
    return w


def _run(opt, w0, grads):
    var = keras.Variable(w0)
    opt.build([var])

    @tf.function
    def step(g):
        opt.apply_gradients([(g, var)])

    for g in grads:
        step(tf.constant(g))
    ops = {
        n.op for n in step.get_concrete_function(tf.constant(grads[0])).graph.as_graph_def().node
    }
    return var.numpy(), "ResourceApplyAdam" in ops


@pytest.mark.parametrize("cls,wd", [(optimizers.Adam, 0.0), (optimizers.AdamW, 0.1)])
def test_fused_update_matches_numpy(cls, wd):
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(3, 4)).astype("float32")
    grads = [rng.normal(size=w0.shape).astype("float32") for _ in range(4)]
    kwargs = {"weight_decay": wd} if wd else {}
    got, fused = _run(cls(learning_rate=0.05, **kwargs), w0, grads)
    assert fused  # the one-kernel path was taken
    np.testing.assert_allclose(got, numpy_adam(w0, grads, 0.05, wd), rtol=1e-5, atol=1e-6)


def test_keras_path_under_mirrored_strategy(mirrored_strategy):
    # Mirrored slots need Keras' per-replica assign ops: the fallback trains exactly like
    # keras.optimizers.AdamW under the same strategy.
    rng = np.random.default_rng(1)
    x = rng.normal(size=(8, 3)).astype("float32")
    y = rng.normal(size=(8, 1)).astype("float32")

    def fit(cls):
        keras.utils.set_random_seed(0)
        with mirrored_strategy.scope():
            inputs = keras.Input((3,))
            model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
            model.compile(optimizer=cls(learning_rate=0.05, weight_decay=0.1), loss="mse")
        model.fit(x, y, batch_size=4, epochs=2, verbose=0, shuffle=False)
        return model.get_weights()

    for a, b in zip(fit(optimizers.AdamW), fit(keras.optimizers.AdamW)):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_amsgrad_falls_back_to_keras():
    rng = np.random.default_rng(2)
    w0 = rng.normal(size=(4,)).astype("float32")
    grads = [rng.normal(size=w0.shape).astype("float32") for _ in range(3)]
    got, fused = _run(optimizers.Adam(learning_rate=0.05, amsgrad=True), w0, grads)
    want, _ = _run(keras.optimizers.Adam(learning_rate=0.05, amsgrad=True), w0, grads)
    assert not fused
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_saved_training_model_keeps_the_optimizer(tmp_path):
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    model.compile(optimizer=optimizers.AdamW(learning_rate=0.01, weight_decay=0.1), loss="mse")
    model.fit(np.ones((4, 3)), np.ones((4, 1)), epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")  # no custom_objects
    assert type(loaded.optimizer) is optimizers.AdamW
    assert loaded.optimizer.weight_decay == pytest.approx(0.1)
    for a, b in zip(loaded.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
