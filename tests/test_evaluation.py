"""Scoring (zoo.evaluation): nothing to score is an error, and a model must fit the data."""

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from helpers import build_tiny
from PIL import Image

from zoo.errors import EvaluationError, ModelFileError
from zoo.evaluation import check_model_fits_data, evaluate_model, summary


def dataset(masks, images):
    return tf.data.Dataset.from_tensor_slices({"image": images, "mask": masks}).batch(2)


def test_an_empty_evaluation_is_an_error_not_a_perfect_score():
    model = build_tiny("unet", num_classes=1)
    empty = dataset(np.zeros((0, 64, 64, 1), np.int32), np.zeros((0, 64, 64, 3), np.float32))
    with pytest.raises(EvaluationError, match="no pixels"):
        evaluate_model(model, empty, num_classes=1, ignore_index=None)
    # Every pixel ignored counts nothing either.
    ignored = dataset(np.full((2, 64, 64, 1), 255, np.int32), np.zeros((2, 64, 64, 3), np.float32))
    with pytest.raises(EvaluationError, match="no pixels"):
        evaluate_model(model, ignored, num_classes=1, ignore_index=255)


def test_no_foreground_anywhere_reports_no_score():
    model = build_tiny("unet", num_classes=1, activation=None)
    for w in model.trainable_variables:  # logits of -1 everywhere: nothing predicted
        w.assign(tf.zeros_like(w))
    bias = model.get_layer("head_conv").bias
    bias.assign(-tf.ones_like(bias))
    data = dataset(np.zeros((2, 64, 64, 1), np.int32), np.zeros((2, 64, 64, 3), np.float32))
    results = evaluate_model(model, data, num_classes=1, ignore_index=None)
    assert np.isnan(results["dice"])
    assert summary({f"val_{k}": v for k, v in results.items()}).endswith(
        "n/a (no foreground in the validation masks or predictions)"
    )


def test_model_must_fit_the_data():
    model = build_tiny("unet", num_classes=1)
    check_model_fits_data(model, 1, 3, "m.keras")
    with pytest.raises(ModelFileError, match=r"m.keras predicts 1 channel\(s\) .*num_classes=3"):
        check_model_fits_data(model, 3, 3, "m.keras")
    gray = build_tiny("unet", num_classes=1, input_shape=(None, None, 1))
    with pytest.raises(ModelFileError, match=r"takes images with 1 channel\(s\) but the data"):
        check_model_fits_data(gray, 1, 3, "m.keras")


# --------------------------------------------------------------------------- full resolution


def compose(overrides, checked=True):
    """The composed config (as train.py gets it), or with checked=True its RunConfig."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from zoo.config import register_configs, validate

    register_configs()
    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(version_base="1.3", config_dir=str(conf)):
        cfg = hydra_compose(config_name="config", overrides=overrides)
    return validate(cfg) if checked else cfg


def write_pair(folder: Path, stem: str, image: np.ndarray, mask: np.ndarray) -> None:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(folder / "images" / f"{stem}.png")
    Image.fromarray(mask).save(folder / "masks" / f"{stem}.png")


def test_mode_evaluate_scores_folder_data_at_native_size(tmp_path):
    """Binary 1x1-conv model (pixel on where red > 0.5), tiled with flip TTA (exact for a
    pointwise model): the scores equal confusion counts taken with np.bincount, 255 ignored."""
    import keras

    from zoo.evaluation import evaluate_checkpoint

    image = keras.Input((None, None, 3), name="image")
    conv = keras.layers.Conv2D(1, 1)
    model = keras.Model(image, conv(image))
    conv.set_weights([np.array([10.0, 0, 0], np.float32).reshape(1, 1, 3, 1), np.array([-5.0])])
    model.save(tmp_path / "m.keras")
    rng = np.random.default_rng(0)
    truths, preds = [], []
    for i, (h, w) in enumerate([(16, 16), (37, 53), (70, 45)]):
        write_pair(tmp_path / "data" / "train", f"t{i}", np.zeros((h, w, 3), np.uint8),
                   np.zeros((h, w), np.uint8))  # fmt: skip
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        mask = (rng.random((h, w)) > 0.5).astype(np.uint8)
        mask[rng.random((h, w)) > 0.9] = 255
        write_pair(tmp_path / "data" / "val", f"v{i}", rgb, mask)
        keep = mask != 255
        truths.append(mask[keep].astype(np.int64))
        preds.append((rgb[..., 0] > 127)[keep].astype(np.int64))
    run = compose([
        "mode=evaluate", f"checkpoint={tmp_path / 'm.keras'}", "data=folder",
        f"data.root={tmp_path / 'data'}", "data.ignore_index=255", "data.image_size=[32,32]",
        "predict.tile=16", "predict.tta=flip", "predict.batch_size=3",
    ])  # fmt: skip
    results = evaluate_checkpoint(run, tmp_path / "eval")
    counts = np.bincount(np.concatenate(truths) * 2 + np.concatenate(preds), minlength=4)
    tn, fp, fn, tp = counts
    assert results["scored_at"] == "full_resolution" and results["val_images"] == 3
    assert results["val_dice"] == pytest.approx(2 * tp / (2 * tp + fp + fn), abs=1e-6)
    assert results["val_iou"] == pytest.approx(tp / (tp + fp + fn), abs=1e-6)
    assert results["val_dice_0"] == pytest.approx(2 * tn / (2 * tn + fp + fn), abs=1e-6)
    saved = json.loads((tmp_path / "eval" / "eval_metrics.json").read_text())
    assert saved["scored_at"] == "full_resolution" and saved["val_dice"] == results["val_dice"]


def test_final_eval_records_input_scale_and_scores_native_files(tmp_path):
    """What a training run ends with (zoo.training.loop.finalize): metadata with the data's
    input scale (its median rule: tests/test_data.py), and scores by `trainer.final_eval`:
    full_resolution scores the native validation files as mode=evaluate scores the saved
    model; image_size the validation tensors, as every epoch does."""
    from types import SimpleNamespace

    from zoo.data import DataInfo
    from zoo.evaluation import evaluate_checkpoint, final_scores
    from zoo.training.loop import training_metadata

    info = DataInfo("folder", 1, "binary", None, 1, 4, 2, (32, 32), ("bg", "fg"), 2,
                    native_sizes=((64, 128), (32, 64)), input_scale=(0.5, 0.375))  # fmt: skip
    assert training_metadata(info)["input_scale"] == [0.5, 0.375]
    # The run's predict.tta is the model's own (the default of its predictions).
    assert training_metadata(info)["tta"] == "none"
    assert training_metadata(info, "hflip")["tta"] == "hflip"
    rng = np.random.default_rng(1)
    for split, sizes in (("train", [(32, 32)]), ("val", [(48, 40), (90, 70)])):
        for i, (h, w) in enumerate(sizes):
            image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            mask = (image[..., 0] > 127).astype(np.uint8)
            write_pair(tmp_path / "data" / split, f"{split}{i}", image, mask)
    data = ["data=folder", f"data.root={tmp_path / 'data'}", "data.image_size=[32,32]"]
    model = build_tiny("unet", num_classes=1)
    model.metadata = training_metadata(info)
    run = compose([*data, "trainer.final_eval=full_resolution"])
    results = final_scores(model, run, SimpleNamespace(info=info))
    assert results["scored_at"] == "full_resolution" and results["val_images"] == 2
    model.save(tmp_path / "m.keras")
    evaluated = evaluate_checkpoint(
        compose(["mode=evaluate", f"checkpoint={tmp_path / 'm.keras'}", *data]), tmp_path / "e"
    )
    assert evaluated["val_dice"] == pytest.approx(results["val_dice"], abs=1e-9)
    assert evaluated["val_iou"] == pytest.approx(results["val_iou"], abs=1e-9)
    masks = np.zeros((2, 32, 32, 1), np.int32)
    masks[:, 8:20, 4:30] = 1
    val = dataset(masks, rng.random((2, 32, 32, 3)).astype(np.float32))
    default = final_scores(model, compose(data), SimpleNamespace(info=info, val=val))
    assert default["scored_at"] == "image_size"
    assert default["val_dice"] == pytest.approx(evaluate_model(model, val, 1, None)["dice"])
