"""Each loss term against segmentation_models_pytorch's, value and gradient, where they agree.

The option mapping below is the one docs/losses.md gives ("Coming from
segmentation_models_pytorch"); each case is a regime in which the two define the same
number (e.g. every class present: smp scores a class absent from the target as 0 loss).
`lovasz` and `mcc` have their own tests (tests/test_lovasz.py, tests/test_mcc.py).
"""

import numpy as np
import pytest
import tensorflow as tf
from test_losses import make_batch
from torch_ref import requires_reference, run_reference

from losses import functional as F

# (smp class, mode, smp kwargs, our term, our options, ignore_index)
CASES = [
    # smp's Dice is a Tversky score with alpha = beta = 0.5: its `smooth` is half ours.
    ("DiceLoss", "binary", {"smooth": 0.0}, "dice", {"smooth": 0.0}, None),
    ("DiceLoss", "binary", {"smooth": 0.5, "ignore_index": 255}, "dice", {"smooth": 1.0}, 255),
    ("DiceLoss", "multiclass", {"ignore_index": 255}, "dice", {"smooth": 0.0}, 255),
    (
        "DiceLoss",
        "multilabel",
        {"classes": [0, 2]},
        "dice",
        {"smooth": 0.0, "classes": [0, 2]},
        None,
    ),
    (
        "DiceLoss",
        "multiclass",
        {"class_weights": [0.5, 1.0, 2.0, 0.25], "classes": [0, 2, 3], "ignore_index": 255},
        "dice",
        {"smooth": 0.0, "class_weights": [0.5, 1.0, 2.0, 0.25], "classes": [0, 2, 3]},
        255,
    ),
    ("JaccardLoss", "binary", {"smooth": 1.0}, "jaccard", {"smooth": 1.0}, None),
    (
        "JaccardLoss",
        "multilabel",
        {"class_weights": [3.0, 1.0, 0.5, 1.0]},
        "jaccard",
        {"smooth": 0.0, "class_weights": [3.0, 1.0, 0.5, 1.0]},
        None,
    ),
    ("JaccardLoss", "multiclass", {}, "jaccard", {"smooth": 0.0}, None),
    ("DiceLoss", "binary", {"log_loss": True}, "dice", {"smooth": 0.0, "log_loss": True}, None),
    (
        "JaccardLoss",
        "multiclass",
        {"log_loss": True, "smooth": 1.0, "ignore_index": 255},
        "jaccard",
        {"log_loss": True, "smooth": 1.0},
        255,
    ),
    (
        "TverskyLoss",
        "binary",
        {"alpha": 0.3, "beta": 0.7, "gamma": 2.0, "log_loss": True},
        "tversky",
        {"alpha": 0.3, "beta": 0.7, "gamma": 2.0, "smooth": 0.0, "log_loss": True},
        None,
    ),
    (
        "TverskyLoss",
        "binary",
        {"alpha": 0.3, "beta": 0.7, "gamma": 0.75},
        "tversky",
        {"alpha": 0.3, "beta": 0.7, "gamma": 0.75, "smooth": 0.0},
        None,
    ),
    (
        "TverskyLoss",
        "multilabel",
        {"alpha": 0.3, "beta": 0.7, "class_weights": [1.0, 2.0, 0.5, 0.5]},
        "tversky",
        {"alpha": 0.3, "beta": 0.7, "smooth": 0.0, "class_weights": [1.0, 2.0, 0.5, 0.5]},
        None,
    ),
    # smp's focal alpha defaults to None, ours to 0.25 (torchvision's and Lin et al.'s).
    ("FocalLoss", "binary", {"alpha": 0.25, "ignore_index": 255}, "focal", {}, 255),
    ("FocalLoss", "binary", {"gamma": 1.5}, "focal", {"alpha": None, "gamma": 1.5}, None),
    ("FocalLoss", "multilabel", {"alpha": 0.25}, "focal", {}, None),
    # smp's smooth_factor s moves targets to s / 1 - s: our label_smoothing 2 s.
    (
        "SoftBCEWithLogitsLoss",
        "binary",
        {"smooth_factor": 0.05, "pos_weight": 2.0},
        "wbce",
        {"label_smoothing": 0.1, "pos_weight": 2.0},
        None,
    ),
    (
        "SoftCrossEntropyLoss",
        "multiclass",
        {"smooth_factor": 0.1},
        "wce",
        {"label_smoothing": 0.1},
        None,
    ),
]


@requires_reference("torch", "segmentation_models_pytorch")
def test_values_and_gradients_match_segmentation_models_pytorch():
    arrays, ours, cases = {}, [], []
    for i, (cls, mode, kwargs, term, options, ignore) in enumerate(CASES):
        # 4 classes on 3 x 8 x 8 random masks: every class is present in the batch.
        y, x, _ = make_batch(mode, b=3, h=8, w=8, c=4, ignore=ignore, seed=i)
        arrays[f"x{i}"], arrays[f"y{i}"] = x, y
        cases.append({"loss": "smp", "cls": cls, "mode": mode, "kwargs": kwargs})
        xv = tf.Variable(x)
        with tf.GradientTape() as tape:
            loss = getattr(F, term)(y, xv, mode=mode, ignore_index=ignore, **options)
        ours.append((float(loss), tape.gradient(loss, xv).numpy()))
    ref = run_reference("smp_losses", arrays, cases=cases)
    for i, (loss, grad) in enumerate(ours):
        name = f"{CASES[i][0]} {CASES[i][1]} {CASES[i][2]}"
        assert loss == pytest.approx(float(ref[f"loss{i}"]), rel=1e-5), name
        np.testing.assert_allclose(grad, ref[f"grad{i}"], rtol=1e-4, atol=1e-7, err_msg=name)
