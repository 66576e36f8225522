"""Streaming Dice/IoU: against an independent NumPy computation, ignore handling, replicas."""

import numpy as np
import pytest
import tensorflow as tf
from torch_ref import requires_reference, run_reference

from zoo.metrics import ConfusionMatrix


def numpy_scores(mask, logits, num_classes, ignore_index=None):
    """Dice/IoU per class straight from the definitions, on flattened arrays."""
    mask = mask.reshape(-1)
    logits = logits.reshape(-1, logits.shape[-1])
    pred = (logits[:, 0] > 0).astype(int) if num_classes == 1 else logits.argmax(-1)
    keep = np.ones_like(mask, bool) if ignore_index is None else mask != ignore_index
    mask, pred = mask[keep], pred[keep]
    classes = [1] if num_classes == 1 else range(num_classes)
    dice, iou = {}, {}
    for c in classes:
        t, p = mask == c, pred == c
        inter, total, union = (t & p).sum(), t.sum() + p.sum(), (t | p).sum()
        if union:
            dice[c], iou[c] = 2 * inter / total, inter / union
    return dice, iou


@pytest.mark.parametrize("num_classes", [1, 4])
@pytest.mark.parametrize("ignore_index", [None, 255])
def test_matches_numpy_over_batches(num_classes, ignore_index):
    rng = np.random.default_rng(num_classes)
    k = max(num_classes, 2)
    masks = rng.integers(0, k, size=(6, 8, 9, 1))
    if ignore_index is not None:
        masks[rng.random(masks.shape) < 0.2] = ignore_index
    logits = rng.normal(size=(6, 8, 9, num_classes)).astype(np.float32)
    metric = ConfusionMatrix(num_classes, ignore_index, per_class=True)
    for i in range(0, 6, 2):  # streaming: three batches, one exact result
        metric.update_state(masks[i : i + 2], logits[i : i + 2])
    result = {k_: float(v) for k_, v in metric.result().items()}
    dice, iou = numpy_scores(masks, logits, num_classes, ignore_index)
    assert result["dice"] == pytest.approx(np.mean(list(dice.values())), abs=1e-6)
    assert result["iou"] == pytest.approx(np.mean(list(iou.values())), abs=1e-6)
    for c in dice:
        assert result[f"dice_{c}"] == pytest.approx(dice[c], abs=1e-6)


def test_hand_worked_multiclass():
    # Pixels (true, pred): (0,0) (1,1) (2,1) (255 ignored). Class 0: dice 1; class 1: tp 1,
    # fp 1 -> 2/3; class 2: fn 1 -> 0. Mean over the three present classes: 5/9.
    metric = ConfusionMatrix(3, ignore_index=255)
    logits = np.eye(3, dtype=np.float32)[[0, 1, 1, 2]][None, None]
    metric.update_state(np.array([[[0, 1, 2, 255]]]), logits)
    assert float(metric.result()["dice"]) == pytest.approx(5 / 9)
    assert float(metric.result()["iou"]) == pytest.approx((1 + 0.5 + 0) / 3)


@pytest.mark.parametrize("background", [0, 2])
def test_background_class_is_left_out_of_the_mean(background):
    # The pixels of test_hand_worked_multiclass: per-class Dice 1, 2/3, 0 and IoU 1, 1/2, 0.
    metric = ConfusionMatrix(3, ignore_index=255, per_class=True, background_class=background)
    logits = np.eye(3, dtype=np.float32)[[0, 1, 1, 2]][None, None]
    metric.update_state(np.array([[[0, 1, 2, 255]]]), logits)
    result = {k: float(v) for k, v in metric.result().items()}
    dice, iou = {0: 1.0, 1: 2 / 3, 2: 0.0}, {0: 1.0, 1: 0.5, 2: 0.0}
    rest = [c for c in range(3) if c != background]
    assert result["dice"] == pytest.approx(np.mean([dice[c] for c in rest]))
    assert result["iou"] == pytest.approx(np.mean([iou[c] for c in rest]))
    assert result[f"dice_{background}"] == pytest.approx(dice[background])  # still reported
    restored = ConfusionMatrix.from_config(metric.get_config())
    assert restored.background_class == background


def test_only_the_background_present_is_nan():
    # Truth and prediction all class 0: no foreground class to average, so no score (not 1).
    metric = ConfusionMatrix(3, background_class=0)
    metric.update_state(np.zeros((1, 2, 2)), np.eye(3, dtype=np.float32)[np.zeros((1, 2, 2), int)])
    assert np.isnan(float(metric.result()["dice"]))


@pytest.mark.parametrize(
    "kwargs", [{"num_classes": 1}, {"num_classes": 3, "multilabel": True}, {"num_classes": 3}]
)
def test_background_class_must_be_a_multiclass_id(kwargs):
    bad = 3 if kwargs == {"num_classes": 3} else 0
    with pytest.raises(ValueError, match=f"background_class={bad}"):
        ConfusionMatrix(background_class=bad, **kwargs)


def test_reset_and_nothing_to_score_is_nan_never_one():
    metric = ConfusionMatrix(1)
    # Nothing counted at all: every score is undefined (the evaluator turns this into an error).
    assert all(np.isnan(float(v)) for v in metric.result().values())
    # No foreground in truth or prediction: the foreground Dice is undefined, not a perfect 1.
    metric.update_state(np.zeros((1, 4, 4, 1)), -np.ones((1, 4, 4, 1), np.float32))
    assert np.isnan(float(metric.result()["dice"])) and np.isnan(float(metric.result()["iou"]))
    metric.update_state(np.ones((1, 4, 4, 1)), -np.ones((1, 4, 4, 1), np.float32))
    assert float(metric.result()["dice"]) == 0.0
    metric.reset_state()
    assert float(np.sum(metric.counts.numpy())) == 0.0


def test_absent_classes_are_nan_and_skipped_by_the_mean():
    # Truth (0, 1, 0), prediction (0, 1, 1): class 0 tp 1 fn 1 -> 2/3, class 1 tp 1 fp 1 -> 2/3.
    # Class 2 appears in neither: its scores are NaN and the mean is over classes 0 and 1 only.
    metric = ConfusionMatrix(3, per_class=True)
    logits = np.eye(3, dtype=np.float32)[[0, 1, 1]][None, None]
    metric.update_state(np.array([[[0, 1, 0]]]), logits)
    result = {k: float(v) for k, v in metric.result().items()}
    assert np.isnan(result["dice_2"]) and np.isnan(result["iou_2"])
    assert result["dice_0"] == pytest.approx(2 / 3) and result["dice_1"] == pytest.approx(2 / 3)
    assert result["dice"] == pytest.approx(2 / 3)


def test_exact_across_replicas(mirrored_strategy):
    strategy = mirrored_strategy
    rng = np.random.default_rng(0)
    masks = rng.integers(0, 3, size=(4, 5, 5, 1)).astype(np.int32)
    logits = rng.normal(size=(4, 5, 5, 3)).astype(np.float32)
    single = ConfusionMatrix(3)
    single.update_state(masks, logits)
    with strategy.scope():
        metric = ConfusionMatrix(3)
    ds = tf.data.Dataset.from_tensor_slices((masks, logits)).batch(4)
    for m, lg in strategy.experimental_distribute_dataset(ds):
        strategy.run(metric.update_state, args=(m, lg))
    np.testing.assert_allclose(metric.counts.numpy(), single.counts.numpy())
    assert float(metric.result()["dice"]) == pytest.approx(float(single.result()["dice"]))


@requires_reference("torch", "segmentation_models_pytorch")
def test_matches_segmentation_models_pytorch_metrics():
    # smp.metrics on the same predictions: binary "micro" is the foreground score, multiclass
    # and multilabel "macro" the class mean (every class occurs here), and leaving out class 0
    # is background_class=0. Dice is smp's f1_score.
    rng = np.random.default_rng(5)
    cases, arrays, ours = [], {}, []
    for i, (mode, k, ignore, background) in enumerate(
        [
            ("binary", 1, None, None),
            ("multiclass", 4, None, None),
            ("multiclass", 4, 255, None),
            ("multiclass", 4, 255, 0),
            ("multilabel", 3, None, None),
        ]
    ):
        shape = (6, 8, 9, k if mode == "multilabel" else 1)
        mask = rng.integers(0, max(k, 2) if mode != "multilabel" else 2, size=shape)
        if ignore is not None:
            mask[rng.random(shape) < 0.2] = ignore
        logits = rng.normal(size=(6, 8, 9, k)).astype(np.float32)
        arrays[f"x{i}"], arrays[f"y{i}"] = logits, mask
        cases.append(
            {"mode": mode, "num_classes": k, "ignore_index": ignore, "skip_first": background == 0}
        )
        metric = ConfusionMatrix(
            k, ignore, multilabel=mode == "multilabel", background_class=background
        )
        for j in range(0, 6, 3):
            metric.update_state(mask[j : j + 3], logits[j : j + 3])
        ours.append({key: float(v) for key, v in metric.result().items()})
    ref = run_reference("smp_metrics", arrays, cases=cases)
    for i, got in enumerate(ours):
        assert got["iou"] == pytest.approx(float(ref[f"iou{i}"]), abs=1e-6), cases[i]
        assert got["dice"] == pytest.approx(float(ref[f"f1{i}"]), abs=1e-6), cases[i]
