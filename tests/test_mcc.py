"""The `mcc` term: hand-worked values, degenerate batches, smp parity.

The generic checks (NumPy reference over every mode and option, serialization, bad masks,
mixed precision) run for it with the other terms in tests/test_losses.py.
"""

import math

import numpy as np
import pytest
import tensorflow as tf
from test_losses import make_batch, value
from torch_ref import requires_reference, run_reference

from losses import functional as F

LG = math.log(3.0)  # logit of probability 0.75


def test_hand_worked():
    # Targets 1 0 1 0. Probabilities 0.75 0.25 0.75 0.25: tp = tn = 1.5, fp = fn = 0.5,
    # MCC = (1.5^2 - 0.5^2) / sqrt(2^4) = 0.5.
    y = np.array([1, 0, 1, 0], np.int32).reshape(1, 1, 4, 1)
    x = np.array([LG, -LG, LG, -LG], np.float32).reshape(1, 1, 4, 1)
    assert value("mcc", y, x, eps=0.0) == pytest.approx(0.5, rel=1e-6)
    # One pixel wrong way round (0.75 / 0.25 swapped): tp = fp = fn = tn = 1, MCC 0.
    x_bad = np.array([LG, -LG, -LG, LG], np.float32).reshape(1, 1, 4, 1)
    assert value("mcc", y, x_bad, eps=0.0) == pytest.approx(1.0, rel=1e-6)
    # Weight 3 on the first pixel: tp = 0.75 * 3 + 0.75 = 3, fn = 0.25 * 3 + 0.25 = 1,
    # fp = 0.5, tn = 1.5: (4.5 - 0.5) / sqrt(3.5 * 4 * 2 * 2.5).
    w = np.array([3.0, 1.0, 1.0, 1.0], np.float32).reshape(1, 1, 4, 1)
    want = 1 - 4.0 / math.sqrt(3.5 * 4 * 2 * 2.5)
    assert value("mcc", y, x, w, eps=0.0) == pytest.approx(want, rel=1e-6)
    # eps is added to each count: smp's default 1e-5.
    e = 1e-5
    tp, tn, fp, fn = 1.5 + e, 1.5 + e, 0.5 + e, 0.5 + e
    want = 1 - (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert value("mcc", y, x) == pytest.approx(want, rel=1e-6)


def test_one_class_batch_is_finite_and_nothing_left_is_zero():
    y, x, _ = make_batch("binary", seed=2)
    xv = tf.Variable(x)
    for mask in (np.zeros_like(y), np.ones_like(y)):
        with tf.GradientTape() as tape:
            loss = F.mcc(mask, xv)
        assert np.isfinite(float(loss))
        assert np.all(np.isfinite(tape.gradient(loss, xv).numpy()))
    with tf.GradientTape() as tape:
        loss = F.mcc(np.full_like(y, 255), xv, ignore_index=255, eps=0.0, reduction="image")
    assert float(loss) == 0.0
    np.testing.assert_array_equal(tape.gradient(loss, xv).numpy(), 0.0)


@requires_reference("torch", "segmentation_models_pytorch")
def test_value_and_gradient_match_segmentation_models_pytorch():
    y, x, _ = make_batch("binary", b=3, h=16, w=16)
    xv = tf.Variable(x)
    with tf.GradientTape() as tape:
        loss = F.mcc(y, xv)
    ref = run_reference("smp_losses", {"x0": x, "y0": y}, cases=[{"loss": "mcc", "mode": "binary"}])
    assert float(loss) == pytest.approx(float(ref["loss0"]), rel=1e-5)
    np.testing.assert_allclose(tape.gradient(loss, xv).numpy(), ref["grad0"], atol=1e-8, rtol=1e-4)
