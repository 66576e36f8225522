"""The `lovasz` term: hand-worked values, its subgradient, empty sets, smp parity, replicas.

The generic checks (NumPy reference over every mode and option, serialization, bad masks,
mixed precision) run for it with the other terms in tests/test_losses.py.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_losses import make_batch, np_loss, value
from torch_ref import requires_reference, run_reference

import losses
from losses import functional as F


def test_binary_hinge_hand_worked():
    # Labels 1 0 1 0, logits 2 -1 0.5 0.3: hinge errors 0, 0, 0.5, 1.3. Sorted: 1.3 (a
    # background pixel), 0.5 (foreground), then the two zeros. |gt| = 2: the error set {4}
    # has Jaccard loss 1 / (2 + 1), {4, 3} 2 / (2 + 1); loss = 1.3 / 3 + 0.5 / 3 = 0.6.
    y = np.array([1, 0, 1, 0], np.int32).reshape(1, 2, 2, 1)
    x = np.array([2.0, -1.0, 0.5, 0.3], np.float32).reshape(1, 2, 2, 1)
    assert value("lovasz", y, x) == pytest.approx(0.6, rel=1e-6)
    # Weight 3 on the foreground pixel with error 0.5: |gt| = 1 + 3; {4}: 1 / 5, {4, 3}: 4 / 5.
    w = np.array([1.0, 1.0, 3.0, 1.0], np.float32).reshape(1, 2, 2, 1)
    assert value("lovasz", y, x, w) == pytest.approx(1.3 / 5 + 0.5 * 3 / 5, rel=1e-6)
    # Weight 0 (or ignore_index) on pixel 4 leaves {3}: 1 / 2 of the 0.5 error.
    w0 = np.array([1.0, 1.0, 1.0, 0.0], np.float32).reshape(1, 2, 2, 1)
    assert value("lovasz", y, x, w0) == pytest.approx(0.25, rel=1e-6)
    y_ign = np.array([1, 0, 1, 9], np.int32).reshape(1, 2, 2, 1)
    assert value("lovasz", y_ign, x, ignore_index=9) == pytest.approx(0.25, rel=1e-6)


def test_multiclass_softmax_hand_worked():
    # Two pixels, two classes, softmax probabilities from logits (0, 0) and (ln 3, 0):
    # pixel 1 is class 0 with p = (0.5, 0.5), pixel 2 class 1 with p = (0.75, 0.25).
    # Class 0: errors |1 - 0.5| = 0.5 (fg), |0 - 0.75| = 0.75 (bg); sorted 0.75 (bg), 0.5
    # (fg), |gt| = 1: {bg} 1 / 2, {bg, fg} 1: 0.75 / 2 + 0.5 / 2 = 0.625. Class 1: errors 0.5
    # (bg), 0.75 (fg); sorted 0.75 (fg), 0.5 (bg): {fg} 1 / 1, then no change: 0.75.
    y = np.array([0, 1], np.int32).reshape(1, 1, 2, 1)
    x = np.array([[0.0, 0.0], [np.log(3.0), 0.0]], np.float32).reshape(1, 1, 2, 2)
    assert value("lovasz", y, x, mode="multiclass") == pytest.approx((0.625 + 0.75) / 2, rel=1e-6)
    # Class 1 absent: only class 0 is averaged unless it is listed.
    y0 = np.zeros_like(y)
    # Class 0 errors 0.5, 0.25, both fg: sorted 0.5, 0.25: {a} 1 / 2, {a, b} 2 / 2.
    assert value("lovasz", y0, x, mode="multiclass") == pytest.approx(0.5 / 2 + 0.25 / 2)
    # Class 1 listed though absent: its errors 0.5, 0.25 all count as errors of the empty
    # set (|gt| = 0, loss 1 as soon as one pixel is wrong): the largest, 0.5.
    both = value("lovasz", y0, x, mode="multiclass", classes=[0, 1])
    assert both == pytest.approx((0.375 + 0.5) / 2, rel=1e-6)


@pytest.mark.parametrize("mode", ["binary", "multiclass", "multilabel"])
@pytest.mark.parametrize("reduction", ["batch", "image"])
def test_gradient_is_the_finite_difference(mode, reduction):
    # The loss is piecewise smooth in the logits (linear in the hinge errors between sort
    # changes): central differences at a generic point give its gradient.
    y, x, w = make_batch(mode, b=2, h=3, w=3, seed=3)
    xv = tf.Variable(x.astype(np.float64))
    with tf.GradientTape() as tape:
        loss = F.lovasz(y, xv, w, mode=mode, reduction=reduction)
    grad = tape.gradient(loss, xv).numpy()
    h, numeric = 1e-3, np.zeros_like(x, np.float64)
    for idx in np.ndindex(x.shape):
        hi, lo = x.astype(np.float64), x.astype(np.float64)
        hi[idx] += h
        lo[idx] -= h
        up = np_loss("lovasz", y, hi, w, mode=mode, reduction=reduction)
        down = np_loss("lovasz", y, lo, w, mode=mode, reduction=reduction)
        numeric[idx] = (up - down) / (2 * h)
    np.testing.assert_allclose(grad, numeric, rtol=2e-3, atol=2e-4)


@pytest.mark.parametrize("how", ["ignored", "weight 0"])
def test_image_reduction_leaves_out_images_with_no_pixel_that_counts(how):
    y, x, w = make_batch("binary", b=3, seed=7)
    if how == "ignored":
        y[1] = 255
    else:
        w[1] = 0.0
    got = value("lovasz", y, x, w, ignore_index=255, reduction="image")
    alone = [value("lovasz", y[i : i + 1], x[i : i + 1], w[i : i + 1]) for i in (0, 2)]
    assert got == pytest.approx(np.mean(alone), rel=1e-5)
    x2 = x.copy()
    x2[1] = np.random.default_rng(1).normal(0, 10, x2[1].shape)
    assert value("lovasz", y, x2, w, ignore_index=255, reduction="image") == pytest.approx(got)


@pytest.mark.parametrize("mode", ["binary", "multiclass", "multilabel"])
@pytest.mark.parametrize("reduction", ["batch", "image"])
def test_nothing_left_is_zero_loss_with_zero_gradient(mode, reduction):
    y, x, _ = make_batch(mode, seed=8)
    x = tf.Variable(x)
    for y_all, w in ((np.full_like(y, 255), None), (y, np.zeros((2, 6, 5, 1), np.float32))):
        with tf.GradientTape() as tape:
            loss = F.lovasz(y_all, x, w, mode=mode, ignore_index=255, reduction=reduction)
        assert float(loss) == 0.0
        np.testing.assert_array_equal(tape.gradient(loss, x).numpy(), 0.0)


def test_multilabel_label_with_no_pixel_that_counts_leaves_the_label_mean():
    y, x, _ = make_batch("multilabel", seed=9)
    y[..., 1] = 255
    got = value("lovasz", y, x, mode="multilabel", ignore_index=255)
    assert got == pytest.approx(
        value("lovasz", y, x, mode="multilabel", ignore_index=255, classes=[0, 2]), rel=1e-6
    )


# --------------------------------------------------------------------------- smp parity

SMP_CASES = [
    {"mode": "binary", "per_image": False, "ignore_index": None},
    {"mode": "binary", "per_image": True, "ignore_index": 255},
    {"mode": "multiclass", "per_image": False, "ignore_index": 255},
    {"mode": "multiclass", "per_image": True, "ignore_index": None},
    {"mode": "multilabel", "per_image": False, "ignore_index": None, "per_channel": True},
    {"mode": "multilabel", "per_image": True, "ignore_index": 255, "per_channel": True},
]
SMP_CASES = [{"loss": "lovasz", **case} for case in SMP_CASES]


@requires_reference("torch", "segmentation_models_pytorch")
def test_values_and_gradients_match_segmentation_models_pytorch():
    arrays, ours = {}, []
    for i, case in enumerate(SMP_CASES):
        # 16x16 images: ties among 256 continuous errors per image have probability 0.
        y, x, _ = make_batch(case["mode"], b=3, h=16, w=16, c=4, ignore=case["ignore_index"])
        arrays[f"x{i}"], arrays[f"y{i}"] = x, y
        xv = tf.Variable(x)
        with tf.GradientTape() as tape:
            loss = F.lovasz(
                y,
                xv,
                mode=case["mode"],
                ignore_index=case["ignore_index"],
                reduction="image" if case["per_image"] else "batch",
            )
        ours.append((float(loss), tape.gradient(loss, xv).numpy()))
    ref = run_reference("smp_losses", arrays, cases=SMP_CASES)
    for i, (loss, grad) in enumerate(ours):
        assert loss == pytest.approx(float(ref[f"loss{i}"]), rel=1e-5), SMP_CASES[i]
        np.testing.assert_allclose(grad, ref[f"grad{i}"], rtol=1e-4, atol=1e-7)


# --------------------------------------------------------------------------- in training


def test_composes_trains_and_saves(tmp_path):
    image = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(image)
    model = keras.Model(image, keras.layers.Conv2D(1, 1)(x))
    train = losses.attach(model, "wbce+0.5*lovasz", lovasz={"reduction": "image"})
    train.compile(optimizer=keras.optimizers.Adam(1e-2))
    rng = np.random.default_rng(0)
    img = rng.random((8, 16, 16, 3)).astype(np.float32)
    mask = (img[..., :1] > 0.5).astype(np.int32)
    data = {"image": img, "mask": mask, "weight": np.ones(mask.shape, np.float32)}
    hist = train.fit(data, batch_size=4, epochs=8, verbose=0).history
    assert {"wbce_loss", "lovasz_loss"} <= set(hist)
    assert hist["lovasz_loss"][-1] < hist["lovasz_loss"][0]
    # The logged term is the weighted one: 0.5 * lovasz of the model's logits.
    logits = model.predict(img, verbose=0)
    got = train.evaluate(data, batch_size=8, return_dict=True, verbose=0)["lovasz_loss"]
    want = 0.5 * value("lovasz", data["mask"], logits, reduction="image")
    assert got == pytest.approx(want, rel=1e-4)
    path = tmp_path / "train.keras"
    train.save(path)
    again = keras.saving.load_model(path)
    assert again.evaluate(data, batch_size=8, return_dict=True, verbose=0)[
        "lovasz_loss"
    ] == pytest.approx(got, rel=1e-5)


def test_replicas_image_reduction_is_exact_and_batch_is_the_replicas_mean(mirrored_strategy):
    y, x, w = make_batch("binary", b=4, h=8, w=8, ignore=255, seed=4)
    data = tf.data.Dataset.from_tensors((y, x, w))

    def step(reduction):
        def fn(yb, xb, wb):
            return F.lovasz(yb, xb, wb, ignore_index=255, reduction=reduction)

        batch = next(iter(mirrored_strategy.experimental_distribute_dataset(data)))
        out = tf.function(lambda a, b, c: mirrored_strategy.run(fn, args=(a, b, c)))(*batch)
        return [float(v) for v in mirrored_strategy.experimental_local_results(out)]

    image = step("image")
    assert image == pytest.approx(
        [value("lovasz", y, x, w, ignore_index=255, reduction="image")] * 2
    )
    halves = [
        value("lovasz", y[s], x[s], w[s], ignore_index=255) for s in (slice(0, 2), slice(2, 4))
    ]
    assert step("batch") == pytest.approx([np.mean(halves)] * 2, rel=1e-6)
