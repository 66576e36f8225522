"""Frozen encoders and an encoder learning-rate multiplier (zoo.optimizers)."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import build_tiny, fixed_batch, pixel_loss

import zoo
from zoo import optimizers


def snapshot(variables):
    return [np.asarray(v).copy() for v in variables]


def encoder_and_rest(model):
    enc = [v for v in model.weights if optimizers.is_encoder_variable(v)]
    ids = {id(v) for v in enc}
    return enc, [v for v in model.weights if id(v) not in ids]


@pytest.mark.parametrize("name", zoo.list_models())
def test_freeze_encoder_marks_exactly_the_encoder(name):
    model = build_tiny(name)
    encoder, rest = encoder_and_rest(model)
    assert encoder and rest
    assert all(layer.name.startswith("encoder") for layer in model.encoder_layers)
    model.freeze_encoder()
    trainable = {id(v) for v in model.trainable_variables}
    assert not any(id(v) in trainable for v in encoder)
    assert all(id(v) in trainable for v in rest if v.trainable)
    model.freeze_encoder(False)
    assert {id(v) for v in model.trainable_variables} >= {id(v) for v in encoder if v.trainable}


def test_frozen_encoder_is_bitwise_unchanged_by_fit():
    keras.utils.set_random_seed(0)
    model = build_tiny("unet")
    model.freeze_encoder()
    encoder, rest = encoder_and_rest(model)
    assert any("moving_mean" in v.path for v in encoder)  # batch-norm statistics included
    before_enc, before_rest = snapshot(encoder), snapshot(rest)
    images, masks = fixed_batch(4, 64, 64, num_classes=2)
    model.compile(
        optimizer=optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(images, masks, batch_size=2, epochs=1, verbose=0)
    for v, b in zip(encoder, before_enc):
        np.testing.assert_array_equal(np.asarray(v), b, err_msg=v.path)
    # The decoder did train: its weights and its batch-norm statistics moved.
    moved = {v.path for v, b in zip(rest, before_rest) if not np.array_equal(np.asarray(v), b)}
    assert "decoder_block1_conv1_conv/kernel" in moved
    assert "decoder_block1_conv1_bn/moving_mean" in moved


def test_frozen_state_is_saved_with_the_model(tmp_path):
    model = build_tiny("unet")
    model.freeze_encoder()
    model.save(tmp_path / "m.keras")
    loaded = zoo.saving.load_model(tmp_path / "m.keras")
    assert loaded.encoder_frozen
    assert not any(layer.trainable for layer in loaded.encoder_layers)
    assert all(layer.trainable for layer in loaded.layers if layer not in loaded.encoder_layers)


@pytest.mark.slow  # a fit traced under MirroredStrategy: ~45 s on 2 cores
def test_frozen_encoder_under_mirrored_strategy(mirrored_strategy):
    with mirrored_strategy.scope():
        keras.utils.set_random_seed(0)
        model = build_tiny("unet")
        model.freeze_encoder()
        model.compile(
            optimizer=optimizers.Adam(1e-2),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
    encoder, _ = encoder_and_rest(model)
    before = snapshot(encoder)
    images, masks = fixed_batch(4, 64, 64, num_classes=2)
    model.fit(images, masks, batch_size=4, epochs=1, verbose=0)
    for v, b in zip(encoder, before):
        np.testing.assert_array_equal(np.asarray(v), b, err_msg=v.path)


def one_step(model, optimizer, images, masks):
    with tf.GradientTape() as tape:
        loss = pixel_loss(masks, model(images, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return grads


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_encoder_update_is_the_stated_fraction(momentum):
    keras.utils.set_random_seed(0)
    model = build_tiny("unet", encoder_kwargs={"base_width": 8})
    images, masks = fixed_batch(2, 64, 64, num_classes=2)
    lr, mult = 0.5, 0.1
    before = snapshot(model.trainable_variables)
    opt = optimizers.SGD(lr, momentum=momentum, encoder_lr_mult=mult)
    grads = one_step(model, opt, images, masks)
    ratios = {True: [], False: []}
    for v, b, g in zip(model.trainable_variables, before, grads):
        enc = optimizers.is_encoder_variable(v)
        step, plain = np.asarray(v) - b, -lr * np.asarray(g)  # plain: the decoder's rule
        # (float32 weights: a step is only known to about 1e-7 of the weight's size)
        want = plain * (mult if enc else 1.0)
        np.testing.assert_allclose(step, want, rtol=1e-3, atol=1e-7 * (1 + np.abs(b)).max())
        ratios[enc].append(np.linalg.norm(step) / np.linalg.norm(plain))
    assert ratios[True] and ratios[False]
    np.testing.assert_allclose(np.median(ratios[True]), mult, rtol=1e-3)
    np.testing.assert_allclose(np.median(ratios[False]), 1.0, rtol=1e-3)


@pytest.mark.parametrize(
    "cls, kwargs",
    [
        (optimizers.Adam, {}),
        (optimizers.AdamW, {"weight_decay": 0.05}),
    ],
)
def test_adam_encoder_update_scales_with_the_multiplier(cls, kwargs):
    # Adam's step (and AdamW's decoupled decay) are proportional to the learning rate: the
    # multiplier's updates are `mult` times those of the same step without it.
    images, masks = fixed_batch(2, 64, 64, num_classes=2)
    steps = {}
    for mult in (1.0, 0.25):
        keras.utils.set_random_seed(0)
        model = build_tiny("unet")
        before = snapshot(model.trainable_variables)
        one_step(model, cls(1e-2, encoder_lr_mult=mult, **kwargs), images, masks)
        steps[mult] = [np.asarray(v) - b for v, b in zip(model.trainable_variables, before)]
        flags = [optimizers.is_encoder_variable(v) for v in model.trainable_variables]
    for full, scaled, enc in zip(steps[1.0], steps[0.25], flags):
        np.testing.assert_allclose(scaled, full * (0.25 if enc else 1.0), rtol=2e-3, atol=1e-8)


def test_multiplier_under_mirrored_strategy(mirrored_strategy):
    images, masks = fixed_batch(2, 64, 64, num_classes=2)
    with mirrored_strategy.scope():
        keras.utils.set_random_seed(0)
        model = build_tiny("unet")
        opt = optimizers.SGD(0.5, encoder_lr_mult=0.1)
    before = snapshot(model.trainable_variables)
    replicas = mirrored_strategy.num_replicas_in_sync

    def step():  # every replica sees the same batch: the summed gradient is one device's
        with tf.GradientTape() as tape:
            loss = pixel_loss(masks, model(images, training=True)) / replicas
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return [g * replicas for g in grads]

    grads = mirrored_strategy.experimental_local_results(mirrored_strategy.run(step))[0]
    checked = {True: 0, False: 0}
    for v, b, g in zip(model.trainable_variables, before, grads):
        enc = optimizers.is_encoder_variable(v)
        plain = -0.5 * np.asarray(g)
        if np.linalg.norm(plain) > 1e-4:  # steps well above float32 rounding
            ratio = np.linalg.norm(np.asarray(v) - b) / np.linalg.norm(plain)
            np.testing.assert_allclose(ratio, 0.1 if enc else 1.0, rtol=1e-2, err_msg=v.path)
            checked[enc] += 1
    assert checked[True] > 10 and checked[False] > 5


def test_resumed_optimizer_state_continues_the_run(tmp_path):
    # Two steps, a checkpoint of the model and optimizer variables (what backups save), a
    # fresh model and optimizer that restore them, one more step: the same weights as three
    # uninterrupted steps.
    images, masks = fixed_batch(2, 64, 64, num_classes=2)

    def make():  # AdamW: moment slots and a decoupled decay, both under the multiplier
        keras.utils.set_random_seed(0)
        model = build_tiny("unet")
        opt = optimizers.AdamW(0.05, encoder_lr_mult=0.1, weight_decay=0.01)
        opt.build(model.trainable_variables)
        return model, opt

    straight, opt = make()
    for _ in range(3):
        one_step(straight, opt, images, masks)
    first, opt = make()
    for _ in range(2):
        one_step(first, opt, images, masks)
    path = tf.train.Checkpoint(model=first.variables, opt=opt.variables).write(
        str(tmp_path / "ckpt")
    )
    resumed, opt = make()
    tf.train.Checkpoint(model=resumed.variables, opt=opt.variables).read(path)
    assert int(opt.iterations.numpy()) == 2
    one_step(resumed, opt, images, masks)
    for a, b in zip(straight.weights, resumed.weights):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_multiplier_is_in_the_optimizer_config_and_validated():
    opt = optimizers.AdamW(1e-3, encoder_lr_mult=0.1)
    assert optimizers.AdamW.from_config(opt.get_config()).encoder_lr_mult == 0.1
    with pytest.raises(ValueError, match=r"encoder_lr_mult=-1"):
        optimizers.SGD(0.1, encoder_lr_mult=-1)
