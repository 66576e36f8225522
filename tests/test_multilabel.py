"""Multilabel end to end (docs/data.md "Multilabel masks", docs/training.md "Multilabel"):
overlapping labels, one sigmoid per label, per-label Dice/IoU, folder layouts, augmentation,
overlays, and a model trained by train.py that every consumer reads as multilabel."""

import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from test_configs import make
from test_train import TINY_UNET, train

from zoo.data import build_datasets
from zoo.data.config import AugmentConfig, parse_data_config
from zoo.data.pipeline import augment
from zoo.errors import ConfigError, DataError, MissingFileError
from zoo.metrics import ConfusionMatrix
from zoo.outputs import blend_labels, label_colors

# A 4x4 example with two overlapping labels: A = the top two rows, B = the left two columns
# (4 pixels are both). Predicted: A = the top three rows, B = the first column.
TRUTH = np.zeros((4, 4, 2), np.int32)
TRUTH[:2, :, 0] = 1
TRUTH[:, :2, 1] = 1
PRED = np.zeros((4, 4, 2), bool)
PRED[:3, :, 0] = True
PRED[:, :1, 1] = True
LOGITS = np.where(PRED, 2.0, -2.0).astype(np.float32)


def test_per_label_dice_and_iou_by_hand():
    # A: tp 8, fp 4, fn 0 -> Dice 16/20, IoU 8/12. B: tp 4, fp 0, fn 4 -> Dice 8/12, IoU 4/8.
    m = ConfusionMatrix(2, multilabel=True, per_class=True, class_names=["a", "b"])
    m.update_state(TRUTH[None], LOGITS[None])
    r = {k: float(v) for k, v in m.result().items()}
    assert r["dice_a"] == pytest.approx(0.8) and r["iou_a"] == pytest.approx(2 / 3)
    assert r["dice_b"] == pytest.approx(2 / 3) and r["iou_b"] == pytest.approx(0.5)
    assert r["dice"] == pytest.approx((0.8 + 2 / 3) / 2)
    assert r["iou"] == pytest.approx((2 / 3 + 0.5) / 2)
    # ignore_index is per label: pixel (2, 0) ignored for A (one of A's false positives)
    # still counts for B, where it is a true positive.
    truth = TRUTH.copy()
    truth[2, 0, 0] = 255
    m = ConfusionMatrix(2, 255, multilabel=True, per_class=True, class_names=["a", "b"])
    m.update_state(truth[None], LOGITS[None])
    r = {k: float(v) for k, v in m.result().items()}
    assert r["dice_a"] == pytest.approx(16 / 19) and r["iou_a"] == pytest.approx(8 / 11)
    assert r["dice_b"] == pytest.approx(2 / 3)
    # Streaming: two halves of the batch give the same counts as the whole.
    halves = ConfusionMatrix(2, multilabel=True, per_class=True)
    halves.update_state(TRUTH[None, :2], LOGITS[None, :2])
    halves.update_state(TRUTH[None, 2:], LOGITS[None, 2:])
    assert float(halves.result()["dice_0"]) == pytest.approx(0.8)


def test_summary_names_each_label():
    from zoo.evaluation import summary

    results = {"val_dice": 0.5, "val_iou": 0.4, "val_dice_cell": 0.75, "val_dice_a_b": 0.25,
               "labels": ["cell", "a b"]}  # fmt: skip
    assert summary(results).endswith("per label: cell 0.7500, a b 0.2500")


def test_a_label_absent_everywhere_is_left_out_of_the_mean():
    truth, logits = TRUTH.copy(), LOGITS.copy()
    truth[..., 1] = 0
    logits[..., 1] = -3.0
    m = ConfusionMatrix(2, multilabel=True, per_class=True)
    m.update_state(truth[None], logits[None])
    r = m.result()
    assert np.isnan(float(r["dice_1"])) and float(r["dice"]) == pytest.approx(0.8)


def test_losses_on_overlapping_labels_match_numpy():
    from losses.dice import dice
    from losses.wbce import wbce

    x, t = LOGITS.astype(np.float64), TRUTH.astype(np.float64)
    bce = np.log1p(np.exp(x)) - t * x
    got = float(wbce(TRUTH[None], LOGITS[None], mode="multilabel"))
    assert got == pytest.approx(bce.mean(), rel=1e-5)
    p = 1 / (1 + np.exp(-x))
    tp = (p * t).sum((0, 1))
    fp, fn = p.sum((0, 1)) - tp, t.sum((0, 1)) - tp
    want = np.mean(1 - (2 * tp + 1) / (2 * tp + fp + fn + 1 + 1e-7))
    got = float(dice(TRUTH[None], LOGITS[None], mode="multilabel"))
    assert got == pytest.approx(want, rel=1e-5)
    # ignore_index per element: the ignored (pixel, label) drops out of wbce's mean only there.
    truth = TRUTH.copy()
    truth[2, 0, 0] = 255
    keep = np.ones_like(bce, bool)
    keep[2, 0, 0] = False
    got = float(wbce(truth[None], LOGITS[None], mode="multilabel", ignore_index=255))
    assert got == pytest.approx(bce[keep].mean(), rel=1e-5)


# --- Folder data ------------------------------------------------------------------------------


def label_folder(root, n=6, size=32, seed=0, npy=False, ignore=False):
    """Images with a bright square (label "a") and a bright bar (label "b") that overlap;
    `ignore`: label "a" is unknown (255) in each image's top-left 4x4 corner."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    masks = []
    for i in range(n):
        a = np.zeros((size, size), np.uint8)
        b = np.zeros((size, size), np.uint8)
        y, x = rng.integers(2, size - 14, 2)
        a[y : y + 12, x : x + 12] = 1
        r = rng.integers(0, size - 6)
        b[r : r + 6, :] = 1
        image = np.stack([a * 150, b * 150, np.zeros_like(a)], -1) + rng.integers(
            0, 60, (size, size, 3)
        )
        Image.fromarray(image.astype(np.uint8)).save(root / "images" / f"s{i}.png")
        if ignore:
            a[:4, :4] = 255
        masks.append(np.stack([a, b], -1))
        if npy:
            (root / "masks").mkdir(exist_ok=True)
            np.save(root / "masks" / f"s{i}.npy", masks[-1])
        else:
            for j, label in enumerate("ab"):
                (root / "masks" / label).mkdir(parents=True, exist_ok=True)
                # Label "a" as 0/255, "b" as 0/1: both are binary masks.
                scale = 255 if label == "a" and not ignore else 1
                Image.fromarray(masks[-1][..., j] * scale).save(
                    root / "masks" / label / f"s{i}.png"
                )
    return root, masks


def folder_cfg(root, **kw):
    return {"name": "folder", "root": str(root), "mode": "multilabel", "image_size": [32, 32],
            "val_ratio": 0.0, "augment": {"enabled": False}, "batch_size": 2, **kw}  # fmt: skip


@pytest.mark.parametrize("npy", [False, True])
def test_folder_reads_both_layouts_as_k_channel_masks(tmp_path, npy):
    root, masks = label_folder(tmp_path / "d", npy=npy)
    bundle = build_datasets(folder_cfg(root), global_batch_size=2)
    info = bundle.info
    assert info.mode == "multilabel" and info.num_classes == 2
    assert info.class_names == (("label_0", "label_1") if npy else ("a", "b"))
    batch = next(iter(bundle.train))
    assert batch["mask"].shape == (2, 32, 32, 2) and batch["weight"].shape == (2, 32, 32, 1)
    # No augmentation, whole 32x32 images: every batch mask is one of the written masks.
    for m in batch["mask"].numpy():
        assert any(np.array_equal(m, w) for w in masks)
    named = build_datasets(folder_cfg(root, class_names=["b", "a"] if not npy else ["x", "y"]), 2)
    if not npy:  # class_names choose the folders and their order
        m = next(iter(named.train))["mask"].numpy()[0]
        assert any(np.array_equal(m, w[..., ::-1]) for w in masks)
    else:
        assert named.info.class_names == ("x", "y")


def test_resize_at_load_takes_every_label_by_nearest_neighbour(tmp_path):
    root, masks = label_folder(tmp_path / "d", n=3)
    cfg = folder_cfg(root, image_size=[16, 16], resize="resize", batch_size=1)
    got = build_datasets(cfg, 1).val_images(0)  # empty: no validation split
    assert got[1].shape == (0, 16, 16, 2)
    batch = next(iter(build_datasets(cfg, 1).train))["mask"].numpy()[0]
    # Pillow's nearest 32 -> 16 takes the pixel at 2i + 1 (centre-aligned).
    assert any(np.array_equal(batch, m[1::2, 1::2]) for m in masks)


def test_folder_errors_name_the_file(tmp_path):
    root, _ = label_folder(tmp_path / "d")
    (root / "masks" / "b" / "s3.png").unlink()
    with pytest.raises(DataError, match=r"s3\.png' has no 'b' mask: expected '.*b/s3\.png'"):
        build_datasets(folder_cfg(root), 2)
    root, _ = label_folder(tmp_path / "e")
    Image.fromarray(np.full((32, 32), 7, np.uint8)).save(root / "masks" / "a" / "s2.png")
    with pytest.raises(DataError, match=r"a/s2\.png' has value 7 \(label 'a'\)"):
        build_datasets(folder_cfg(root), 2)
    with pytest.raises(DataError, match="data.class_names has label 'c'.*label folders.*a, b"):
        build_datasets(folder_cfg(root, class_names=["a", "c"]), 2)
    with pytest.raises(DataError, match="num_classes=3 but the multilabel data has 2 labels"):
        build_datasets(folder_cfg(root, num_classes=3), 2)

    root, _ = label_folder(tmp_path / "n", npy=True)
    np.save(root / "masks" / "s4.npy", np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(DataError, match=r"s4\.npy' has shape \(32, 32, 3\); expected \(H, W, 2\)"):
        build_datasets(folder_cfg(root), 2)
    bad = np.zeros((32, 32, 2), np.float32)
    bad[0, 0, 1] = 0.5
    np.save(root / "masks" / "s4.npy", bad)
    with pytest.raises(DataError, match=r"s4\.npy' has value 0\.5; multilabel masks hold 0/1"):
        build_datasets(folder_cfg(root), 2)
    # 255 is "ignored for that label" when ignore_index says so.
    ok = np.zeros((32, 32, 2), np.uint8)
    ok[:4, :, 0] = 255
    np.save(root / "masks" / "s4.npy", ok)
    bundle = build_datasets(folder_cfg(root, ignore_index=255), 2)
    assert bundle.info.ignore_index == 255
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    (empty / "masks").mkdir()
    with pytest.raises(DataError, match="neither label folders"):
        build_datasets(folder_cfg(empty), 2)
    (tmp_path / "f").mkdir()
    with pytest.raises(MissingFileError, match="Missing folder"):
        build_datasets(folder_cfg(tmp_path / "f"), 2)


def test_border_weights_see_the_objects_of_every_label(tmp_path):
    """unet_border on multilabel data: two objects of different labels 2 px apart get the
    border term between them (docs/data.md's example: w_c + 10 exp(-(1 + 2)^2 / 50))."""
    root = tmp_path / "d"
    for d in ("images", "masks/a", "masks/b"):
        (root / d).mkdir(parents=True)
    a, b = np.zeros((32, 32), np.uint8), np.zeros((32, 32), np.uint8)
    a[10:20, 5:13] = 1
    b[10:20, 15:23] = 1
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "images" / "x.png")
    Image.fromarray(a).save(root / "masks" / "a" / "x.png")
    Image.fromarray(b).save(root / "masks" / "b" / "x.png")
    bundle = build_datasets(folder_cfg(root, weight_map="unet_border", batch_size=1), 1)
    w = next(iter(bundle.train))["weight"].numpy()[0, ..., 0]
    assert w[15, 13] == pytest.approx(1 + 10 * np.exp(-9 / 50), rel=1e-5)
    assert w[15, 8] == pytest.approx(1.0) and w[15, 18] == pytest.approx(1.0)  # on objects


@pytest.mark.parametrize(
    "values, match",
    [
        ({"name": "pets", "mode": "multilabel"}, "multilabel masks: data=folder or data=shapes"),
        ({"name": "shapes", "mode": "multilabel", "num_classes": 3}, "5 .or 1. for multilabel"),
        ({"name": "shapes", "mode": "binary", "num_classes": 5}, "data.mode='binary'"),
        ({"name": "shapes", "mode": "multiclass"}, "multiclass needs >= 2 classes"),
        ({"name": "shapes", "mode": "sparse"}, "auto, binary, multiclass, multilabel"),
        ({"name": "folder", "root": "/x", "mode": "multilabel", "weight_map": "class_balance"},
         "pos_weight"),
        ({"name": "folder", "root": "/x", "mode": "multilabel", "ignore_index": 1},
         "other than 0 and 1"),
        ({"name": "folder", "root": "/x", "class_names": ["a"]}, "unless data.mode=multilabel"),
        ({"name": "folder", "root": "/x", "mode": "multilabel", "class_names": ["a", "a"]},
         "distinct"),
    ],
)  # fmt: skip
def test_config_errors(values, match):
    with pytest.raises(ConfigError, match=match):
        parse_data_config(values)


def test_the_run_config_takes_its_labels_from_the_folders(tmp_path):
    """K (the model's outputs), the label names, the loss's mode and the per-label values
    trainer.monitor may name are known at parse time, before any model or mask."""
    from zoo.config import validate

    root, _ = label_folder(tmp_path / "d", n=2)
    base = ["data=folder", f"data.root={root}", "data.mode=multilabel"]
    run = validate(make([*base, "trainer.monitor=val_iou_b"]))
    assert run.data.num_classes == 2 and run.data.class_names == ["a", "b"]
    assert run.model.kwargs["num_classes"] == 2 and run.loss.mode == "multilabel"
    assert run.loss.spec == "wbce+dice"  # loss=auto
    assert run.resolved["data"]["class_names"] == ["a", "b"]  # config.yaml records them
    with pytest.raises(ConfigError, match="Did you mean 'val_dice_b'"):
        validate(make([*base, "trainer.monitor=val_dice_c"]))
    with pytest.raises(ConfigError, match="term 'wce' supports multiclass"):
        validate(make([*base, "loss=wce+dice"]))
    with pytest.raises(DataError, match="num_classes=3 but the multilabel data has 2 labels"):
        validate(make([*base, "data.num_classes=3"]))


def test_generated_shapes_have_overlapping_labels():
    """data=shapes data.mode=multilabel: "shape" overlaps each kind; the same images' class
    masks (data.num_classes=5) say which kind each pixel is."""
    cfg = {"name": "shapes", "train_size": 4, "val_size": 2, "image_size": [64, 64],
           "cache": False, "augment": {"enabled": False}}  # fmt: skip
    multi = build_datasets({**cfg, "mode": "multilabel"}, 2)
    classes = build_datasets({**cfg, "num_classes": 5}, 2)
    assert multi.info.num_classes == 5 and multi.info.class_names[:2] == ("shape", "ellipse")
    labels, ids = multi.val_images(2)[1], classes.val_images(2)[1][..., 0]
    assert labels.shape == (2, 64, 64, 5)
    np.testing.assert_array_equal(labels[..., 0], ids > 0)
    for k in range(1, 5):
        np.testing.assert_array_equal(labels[..., k], ids == k)
    assert labels[..., 0].any() and (labels.sum(-1) == 2 * labels[..., 0]).all()
    from zoo.config import validate

    run = validate(make(["data.mode=multilabel"]))
    assert run.model.kwargs["num_classes"] == 5 and run.loss.mode == "multilabel"
    assert "val_dice_star" in run.loss.logged()


def test_augmentation_moves_every_label_with_the_image():
    """Crops, flips and quarter turns: each label channel stays where its pixels are; the
    image's three bands are the three labels, so alignment is checked pixel by pixel."""
    rng = np.random.default_rng(0)
    blocks = (rng.random((10, 10, 3)) < 0.4).astype(np.int32)  # overlapping 4x4 blocks
    labels = blocks.repeat(4, 0).repeat(4, 1)
    image = tf.constant(labels.astype(np.float32))  # 3 "bands" = the 3 labels
    cfg = AugmentConfig(scale=[0.3, 0.9], brightness=0.0, contrast=0.0)
    for s in range(12):
        key = tf.constant([s, 7], tf.int64)
        out = augment(image, tf.constant(labels), tf.ones((40, 40, 1)), key, (24, 24), cfg)
        mask, img = out["mask"].numpy(), out["image"].numpy()
        assert mask.shape == (24, 24, 3) and set(np.unique(mask)) <= {0, 1}
        # The image was resized bilinearly, the labels by nearest neighbour: wherever the image
        # is exactly 0 or 1 the labels must agree with it.
        sure = (img < 1e-6) | (img > 1 - 1e-6)
        assert sure.mean() > 0.3
        np.testing.assert_array_equal(mask[sure], np.round(img[sure]).astype(np.int32))


def test_overlay_shows_each_label_and_their_overlap():
    rgb = np.zeros((1, 4, 3), np.uint8)
    labels = np.array([[[1, 0], [0, 1], [1, 1], [0, 0]]])
    out = blend_labels(rgb, labels, alpha=1.0).astype(int)
    a, b = label_colors(2).astype(int)
    np.testing.assert_array_equal(out[0, 0], a)
    np.testing.assert_array_equal(out[0, 1], b)
    np.testing.assert_array_equal(out[0, 2], np.round((a + b) / 2))  # both: their mean
    np.testing.assert_array_equal(out[0, 3], 0)  # neither: the image
    assert len({tuple(c) for c in label_colors(12)}) == 12


def test_evaluation_refuses_a_model_of_another_mode():
    from helpers import build_tiny

    from zoo.errors import ModelFileError
    from zoo.evaluation import check_model_fits_data

    model = build_tiny("unet", num_classes=2)
    model.metadata = {"mode": "multilabel", "class_names": ["a", "b"]}
    check_model_fits_data(model, 2, 3, "m.keras", "multilabel")
    with pytest.raises(ModelFileError, match="m.keras is a multilabel model but the data is "
                       "multiclass .*set data.mode=multilabel"):  # fmt: skip
        check_model_fits_data(model, 2, 3, "m.keras")
    model.metadata = {"mode": "multiclass"}
    with pytest.raises(ModelFileError, match="is a multiclass model but the data is multilabel"):
        check_model_fits_data(model, 2, 3, "m.keras", "multilabel")


# --- Through train.py -------------------------------------------------------------------------


def numpy_scores(truth, logits):
    """Per-label foreground Dice and IoU over the whole set (255: ignored), with NumPy."""
    pred, t, valid = logits > 0, truth == 1, truth != 255
    tp = (pred & t & valid).sum((0, 1, 2))
    fp = (pred & ~t & valid).sum((0, 1, 2))
    fn = (~pred & t & valid).sum((0, 1, 2))
    return 2 * tp / (2 * tp + fp + fn), tp / (tp + fp + fn)


def test_trained_model_is_multilabel_for_every_consumer(tmp_path):
    """Every loss term that takes multilabel data trains in one run, with label "a" partly
    ignored (255, per label); then model.keras alone tells evaluate and predict its mode."""
    root, _ = label_folder(tmp_path / "data", n=8, ignore=True)
    run_dir = tmp_path / "run"
    spec = "wbce+dice+focal+jaccard+tversky"
    args = ["data=folder", f"data.root={root}", "data.mode=multilabel", "data.batch_size=2",
            "data.ignore_index=255", "data.val_ratio=0.25", f"loss={spec}",
            "trainer.max_steps=3", *TINY_UNET, "trainer.num_overlays=1",
            "trainer.export=[saved_model]", "trainer.monitor=val_dice_b"]  # fmt: skip
    proc = train(args, run_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]

    from zoo.data.folder import split_pairs
    from zoo.data.multilabel import read_labels
    from zoo.saving import load_model

    model = load_model(run_dir / "model.keras")
    meta = model.metadata
    assert meta["mode"] == "multilabel" and meta["class_names"] == ["a", "b"]
    assert model.outputs[0].shape[-1] == 2
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["labels"] == ["a", "b"]
    for key in ("val_dice_a", "val_dice_b", "val_iou_a", "val_iou_b"):
        assert key in metrics and key in metrics["history"], key
    h = metrics["history"]
    assert "dice_a" in h and np.isfinite(h["loss"][-1])
    terms = [h[f"{t}_loss"][-1] for t in spec.split("+")]
    assert h["loss"][-1] == pytest.approx(sum(terms), rel=1e-4) and all(v > 0 for v in terms)

    # The final scores, recomputed independently from the model's logits on the val files.
    c = parse_data_config({"name": "folder", "root": str(root), "mode": "multilabel",
                           "val_ratio": 0.25, "ignore_index": 255})  # fmt: skip
    val = split_pairs(c)[1]
    images = np.stack([np.asarray(Image.open(p), np.float32) / 255 for p, _ in val])
    truth = np.stack([read_labels(m, c).labels for _, m in val])
    logits = model(images, training=False).numpy()
    dice, iou = numpy_scores(truth, logits)
    assert metrics["val_dice_a"] == pytest.approx(dice[0], abs=1e-6)
    assert metrics["val_iou_b"] == pytest.approx(iou[1], abs=1e-6)
    assert metrics["val_dice"] == pytest.approx(np.nanmean(dice), abs=1e-6)
    (overlay,) = (run_dir / "overlays").glob("*.png")
    assert Image.open(overlay).size == (3 * 32, 32)

    # The exported SavedModel's mask is (B, H, W, K): per label, the sign of its own logit.
    entry = metrics["exports"]["saved_model"]
    assert entry["logits_error"] <= 1e-5 and entry["mask_agreement"] >= 0.999
    loaded = tf.saved_model.load(str(run_dir / "model_saved_model"))
    uint8 = np.stack([np.asarray(Image.open(p)) for p, _ in val])
    out = loaded.signatures["serving_default"](image=tf.constant(uint8))
    exported = out["mask"].numpy()
    assert exported.shape == logits.shape
    clear = np.abs(logits) > 1e-4
    np.testing.assert_array_equal(exported[clear] > 0, (logits > 0)[clear])

    # mode=evaluate, without data.mode: the model says it is multilabel; same per-label scores.
    args = ["mode=evaluate", f"checkpoint={run_dir / 'model.keras'}", "data=folder",
            f"data.root={root}", "data.val_ratio=0.25", "data.ignore_index=255",
            *TINY_UNET]  # fmt: skip
    proc = train(args, tmp_path / "eval")
    assert proc.returncode == 0, proc.stderr[-3000:]
    evaluated = json.loads((tmp_path / "eval" / "eval_metrics.json").read_text())
    assert evaluated["scored_at"] == "full_resolution" and evaluated["labels"] == ["a", "b"]
    for key in ("val_dice_a", "val_dice_b", "val_iou_a", "val_dice"):
        assert evaluated[key] == pytest.approx(metrics[key], abs=1e-6), key

    # zoo.predict: one 0/255 PNG per label, each the sigmoid > 0.5 of its own channel.
    from zoo.predict import predict_folder

    predict_folder(run_dir / "model.keras", val[0][0], tmp_path / "out")
    for j in range(2):
        (png,) = (tmp_path / "out" / f"label_{j}").glob("*.png")
        mask = np.asarray(Image.open(png)) > 0
        clear = np.abs(logits[0, ..., j]) > 1e-4
        np.testing.assert_array_equal(mask[clear], (logits[0, ..., j] > 0)[clear])
    # A larger image, predicted in 32 px tiles with overlays: a full-size 0/255 mask per label.
    big = np.asarray(Image.open(val[0][0])).repeat(3, 0).repeat(2, 1)[:70, :50]
    Image.fromarray(big).save(tmp_path / "big.png")
    predict_folder(run_dir / "model.keras", tmp_path / "big.png", tmp_path / "tiled", tile=32,
                   overlays=True)  # fmt: skip
    for j in range(2):
        mask = np.asarray(Image.open(tmp_path / "tiled" / f"label_{j}" / "big.png"))
        assert mask.shape == (70, 50) and set(np.unique(mask)) <= {0, 255}
    assert Image.open(tmp_path / "tiled" / "overlays" / "big.png").size == (50, 70)


def test_fingerprint_of_multilabel_data_is_of_the_union_and_each_label(tmp_path):
    from zoo.recipe import fingerprint_folder

    root, masks = label_folder(tmp_path / "data", n=6, ignore=True)
    fp = fingerprint_folder(root, mode="multilabel", ignore_index=255, cache=False)
    m = np.stack(masks)  # (6, 32, 32, 2): label "a" ignored (255) in each top-left corner
    assert fp.labels == ["a", "b"] and fp.num_classes == 1  # the union's statistics
    for j in range(2):
        share = (m[..., j] == 1).sum() / (m[..., j] != 255).sum()
        assert fp.label_frequencies[j] == pytest.approx(share, abs=1e-6)
    union = (m == 1).any(-1)  # label "b" is known everywhere, so every pixel counts
    assert fp.class_frequencies[1] == pytest.approx(union.mean(), abs=1e-6)
    assert fp.foreground_fraction > max(fp.label_frequencies)  # the labels overlap, not nest


def test_recipe_auto_plans_multilabel_data_end_to_end(tmp_path):
    root, masks = label_folder(tmp_path / "data", n=8)
    run_dir = tmp_path / "run"
    args = ["recipe=auto", "data=folder", f"data.root={root}", "data.mode=multilabel",
            "trainer.max_steps=3", "trainer.time_budget=1m", "trainer.verbose=0",
            "trainer.num_overlays=0", "trainer.tensorboard=false"]  # fmt: skip
    proc = train(args, run_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = np.stack(masks)
    shares = [(m[..., j] == 1).mean() for j in range(2)]  # over all 8 (the split's 6 differ)
    logged = proc.stdout + proc.stderr
    assert "Recipe (recipe=auto): 6 train / 2 val images of 32x32" in logged
    applied = json.loads((run_dir / "recipe.json").read_text())["applied"]
    # Both labels cover well over 5% of the pixels: plain BCE + Dice, per label.
    assert min(shares) > 0.05 and applied["loss"] == "wbce+dice"
    assert "loss_options.wbce.pos_weight" not in applied
    # A short CPU budget (max_steps bounds it here): SGD with Nesterov momentum 0.99 at 1e-2.
    assert [applied[f"trainer.{k}"] for k in ("optimizer", "learning_rate", "momentum")] == [
        "sgd",
        0.01,
        0.99,
    ]
    fp = json.loads((run_dir / "fingerprint.json").read_text())
    assert fp["labels"] == ["a", "b"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["labels"] == ["a", "b"] and metrics["steps"] == 3
    # The plan's final Dice is of whole validation files, with the flips it trained with.
    assert metrics["scored_at"] == "full_resolution" and "val_dice_b" in metrics
    from zoo.saving import load_model

    model = load_model(run_dir / "model.keras")
    assert model.metadata["mode"] == "multilabel" and model.outputs[0].shape[-1] == 2
