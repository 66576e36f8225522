"""Deep supervision: auxiliary outputs of the models, their losses in `losses.attach` (checked
against hand-worked NumPy numbers), the single-output saved model and the config keys."""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from hydra import compose, initialize_config_dir

import losses
import zoo
from losses import NearestDownsample, level_weights
from zoo.config import ConfigError, register_configs, validate
from zoo.models.base import deep_supervision_models
from zoo.saving import clone, load_model

ROOT = Path(__file__).resolve().parents[1]
IGNORE = 255
# The strides of the auxiliary outputs, finest first (the documented order).
AUX_STRIDES = {
    "fpn": [4, 8, 16, 32],
    "pspnet": [4],
    "unet": [2, 4, 8, 16],
    "unetplusplus": [2, 4, 8, 16],
    "upernet": [4, 8, 16, 32],
}


# --------------------------------------------------------------------------- NumPy references


def np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


def np_wbce(mask, logits, weight):
    """sum(w * bce) / sum(w) over the pixels that are not ignored."""
    w = weight * (mask != IGNORE)
    t = np.where(mask == IGNORE, 0, mask)
    p = np_sigmoid(logits)
    bce = -(t * np.log(p) + (1 - t) * np.log(1 - p))
    return (w * bce).sum() / w.sum()


def np_dice(mask, logits, weight, smooth=1.0, eps=1e-7):
    """Batch soft Dice loss with per-pixel weights, ignored pixels left out."""
    w = weight * (mask != IGNORE)
    t = np.where(mask == IGNORE, 0, mask)
    p = np_sigmoid(logits)
    tp, fp, fn = (w * p * t).sum(), (w * p * (1 - t)).sum(), (w * (1 - p) * t).sum()
    return 1 - (2 * tp + smooth) / (2 * tp + fp + fn + smooth + eps)


# --------------------------------------------------------------------------- the 2-level toy


def toy_model(size=8):
    """Logits = the image (full resolution) and its 2x2 block means (half resolution)."""
    image = keras.Input((size, size, 1), name="image")
    full = keras.layers.Activation("linear", name="full")(image)
    half = keras.layers.AveragePooling2D(2, name="half")(image)
    return keras.Model(image, [full, half], name="toy")


def toy_batch(size=8, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, (2, size, size, 1)).astype(np.float32)
    mask = (rng.random((2, size, size, 1)) > 0.5).astype(np.int32)
    mask[0, :2] = IGNORE  # rows 0-1: row 1 is sampled at half resolution
    mask[1, 3, :] = IGNORE  # a sampled row...
    mask[1, 4, :] = IGNORE  # ...and one that is not
    weight = rng.uniform(0.1, 3.0, (2, size, size, 1)).astype(np.float32)
    return {"image": logits, "mask": mask, "weight": weight}


def evaluate(train_model, batch):
    train_model.compile(optimizer="sgd")
    return train_model.evaluate(batch, batch_size=len(batch["mask"]), verbose=0, return_dict=True)


def hand_terms(batch):
    """Per-level (wbce, dice) by hand: nearest sampling = odd rows/columns for a 2x reduction."""
    logits, mask, weight = batch["image"], batch["mask"], batch["weight"]
    b, h, w, c = logits.shape
    half_logits = logits.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))
    half_mask, half_weight = mask[:, 1::2, 1::2], weight[:, 1::2, 1::2]
    assert (half_mask == IGNORE).any() and (half_mask != IGNORE).any()
    return [
        (np_wbce(mask, logits, weight), np_dice(mask, logits, weight)),
        (
            np_wbce(half_mask, half_logits, half_weight),
            np_dice(half_mask, half_logits, half_weight),
        ),
    ]


def test_two_level_toy_losses_match_hand_worked_numbers():
    batch = toy_batch()
    (bce0, dice0), (bce1, dice1) = hand_terms(batch)
    logs = evaluate(losses.attach(toy_model(), "wbce+dice", ignore_index=IGNORE), batch)
    expected = {
        "wbce_loss": 2 / 3 * bce0,  # default weights: 1 and 1/2, normalized
        "dice_loss": 2 / 3 * dice0,
        "wbce_aux1_loss": 1 / 3 * bce1,
        "dice_aux1_loss": 1 / 3 * dice1,
    }
    for key, value in expected.items():
        assert logs[key] == pytest.approx(value, rel=1e-5), key
    assert logs["loss"] == pytest.approx(sum(expected.values()), rel=1e-5)
    assert logs["loss"] == pytest.approx(sum(logs[k] for k in expected), rel=1e-6)


def test_given_level_weights_and_spec_weights_multiply():
    batch = toy_batch(seed=1)
    (bce0, dice0), (bce1, dice1) = hand_terms(batch)
    model = losses.attach(
        toy_model(), "0.5*wbce+dice", ignore_index=IGNORE, level_weights=[1.0, 3.0]
    )
    logs = evaluate(model, batch)
    assert logs["wbce_loss"] == pytest.approx(0.25 * 0.5 * bce0, rel=1e-5)
    assert logs["dice_aux1_loss"] == pytest.approx(0.75 * dice1, rel=1e-5)
    total = 0.25 * (0.5 * bce0 + dice0) + 0.75 * (0.5 * bce1 + dice1)
    assert logs["loss"] == pytest.approx(total, rel=1e-5)


def test_a_zero_level_weight_leaves_that_output_out():
    batch = toy_batch(seed=2)
    (bce0, dice0), _ = hand_terms(batch)
    logs = evaluate(
        losses.attach(toy_model(), "wbce+dice", ignore_index=IGNORE, level_weights=[2, 0]), batch
    )
    assert not any("aux" in k for k in logs)
    assert logs["loss"] == pytest.approx(bce0 + dice0, rel=1e-5)


def test_nearest_downsample_copies_the_pixel_under_each_centre():
    grid = np.arange(36, dtype=np.int32).reshape(1, 6, 6, 1)
    ref = np.zeros((1, 4, 4, 1), np.float32)
    out = keras.ops.convert_to_numpy(NearestDownsample()([grid, ref]))
    rows = [0, 2, 3, 5]  # floor((i + 0.5) * 6 / 4) for i = 0..3
    np.testing.assert_array_equal(out[0, ..., 0], grid[0, ..., 0][np.ix_(rows, rows)])
    assert out.dtype == np.int32
    # Unknown sizes (None in the graph): the same rule at run time, labels never averaged.
    mask_in = keras.Input((None, None, 1), dtype="int32")
    ref_in = keras.Input((None, None, 2))
    model = keras.Model([mask_in, ref_in], NearestDownsample()([mask_in, ref_in]))
    labels = np.full((1, 8, 8, 1), IGNORE, np.int32)
    labels[:, ::2, ::2] = 1  # even pixels: never sampled for a 2x reduction
    out = model.predict([labels, np.zeros((1, 4, 4, 2), np.float32)], verbose=0)
    np.testing.assert_array_equal(out, np.full((1, 4, 4, 1), IGNORE))


def test_level_weights_default_halving_and_errors():
    assert level_weights(2) == pytest.approx([2 / 3, 1 / 3])
    assert level_weights(3) == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    assert level_weights(2, [1, 1]) == pytest.approx([0.5, 0.5])
    for bad in ([1.0], [1.0, -0.5], [0, 0], "1,1", [1.0, float("nan")], [True, 1]):
        with pytest.raises(ValueError, match="Invalid value for argument `level_weights`") as e:
            level_weights(2, bad)
        assert "\n" not in str(e.value)
    single = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(1, 1)])
    with pytest.raises(ValueError, match="has one output"):
        losses.attach(single, "dice", level_weights=[1.0])


# --------------------------------------------------------------------------- the models


def test_the_registry_names_the_models_that_support_it():
    assert deep_supervision_models() == sorted(AUX_STRIDES)
    tiny = zoo.model_info("deeplabv3").tiny_config
    with pytest.raises(ValueError, match="argument `deep_supervision`.*unetplusplus") as e:
        zoo.create_model("deeplabv3", input_shape=(64, 64, 3), deep_supervision=True, **tiny)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("name", sorted(AUX_STRIDES))
def test_model_outputs_train_and_the_inference_copy(name):
    tiny = zoo.model_info(name).tiny_config
    cls = zoo.model_info(name).obj
    model = zoo.create_model(
        name, num_classes=2, input_shape=(64, 64, 3), deep_supervision=True, **tiny
    )
    plain = zoo.create_model(name, num_classes=2, input_shape=(64, 64, 3), **tiny)
    shapes = [tuple(t.shape) for t in model.outputs]
    assert shapes == [(None, 64, 64, 2)] + [(None, 64 // s, 64 // s, 2) for s in AUX_STRIDES[name]]
    assert cls.num_outputs({**tiny, "deep_supervision": True}) == len(shapes)
    assert plain.get_config()["deep_supervision"] is False and len(plain.outputs) == 1
    # The auxiliary heads are the only extra weights.
    extra = {v.path for v in model.weights} - {v.path for v in plain.weights}
    assert extra and all(p.startswith("head_aux_") for p in extra)
    assert len(model.weights) - len(extra) == len(plain.weights)

    rng = np.random.default_rng(0)
    batch = {
        "image": rng.random((2, 64, 64, 3), dtype=np.float32),
        "mask": rng.integers(0, 2, (2, 64, 64, 1)).astype(np.int32),
        "weight": np.ones((2, 64, 64, 1), np.float32),
    }
    train_model = losses.attach(model, "wce+dice", mode="multiclass")
    train_model.compile(optimizer="adam")
    logs = {k: v[-1] for k, v in train_model.fit(batch, batch_size=2, verbose=0).history.items()}
    terms = [k for k in logs if k.endswith("_loss")]
    assert len(terms) == 2 * len(shapes)
    assert logs["loss"] == pytest.approx(sum(logs[k] for k in terms), rel=1e-5)

    # The inference copy: one output, the same full-resolution logits.
    copy = clone(model)
    assert len(copy.outputs) == 1 and copy.get_config()["deep_supervision"] is False
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(copy(batch["image"], training=False)),
        keras.ops.convert_to_numpy(model(batch["image"], training=False)[0]),
        rtol=1e-5,
        atol=1e-5,
    )


def test_a_deep_supervised_model_round_trips_through_keras_files(tmp_path):
    tiny = zoo.model_info("unetplusplus").tiny_config
    model = zoo.create_model("unetplusplus", input_shape=(64, 64, 3), deep_supervision=True, **tiny)
    model.save(tmp_path / "m.keras")
    loaded = load_model(tmp_path / "m.keras")
    x = np.random.default_rng(0).random((1, 64, 64, 3), dtype=np.float32)
    for a, b in zip(model(x), loaded(x)):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


# --------------------------------------------------------------------------- config and train.py

CONF = ROOT / "conf"
register_configs()


def make(overrides):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose(config_name="config", overrides=overrides)


@pytest.mark.parametrize(
    "overrides,text",
    [
        (["model=unet", "loss_level_weights=[1,0.5]"], "has one output; set model.deep_"),
        (
            ["model=unet", "model.deep_supervision=true", "loss_level_weights=[1,0.5]"],
            "expected 5 non-negative numbers",
        ),
        (
            ["model=pspnet", "model.deep_supervision=true", "loss_level_weights=[1,-1]"],
            "expected 2 non-negative numbers",
        ),
        (
            ["model=fpn", "model.deep_supervision=true", "loss_level_weights=[0,0,0,0,0]"],
            "positive sum",
        ),
        (["model=deeplabv3", "+model.deep_supervision=true"], "models that support it: fpn"),
    ],
)
def test_config_errors_are_one_line(overrides, text):
    with pytest.raises(ConfigError, match=text) as e:
        validate(make(overrides))
    assert "\n" not in str(e.value)


def test_config_level_weights_reach_the_loss():
    run = validate(
        make(["model=pspnet", "model.deep_supervision=true", "loss_level_weights=[3,1]"])
    )
    assert run.loss.level_weights == [3.0, 1.0] and run.loss.levels == 2
    assert "val_dice_aux1_loss" in run.loss.logged()


TINY = [
    "model=unetplusplus",
    "model.encoder=resnet18",
    "++model.encoder_kwargs={base_width:8}",
    "model.decoder_channels=[16,8,8,8,8]",
    "model.deep_supervision=true",
    "data.image_size=[64,64]",
    "data.train_size=8",
    "data.val_size=4",
    "data.batch_size=4",
    "trainer.epochs=1",
    "trainer.steps_per_epoch=2",
    "trainer.tensorboard=false",
    "trainer.num_overlays=1",
    "trainer.verbose=2",
]


def train(args, run_dir):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args, f"hydra.run.dir={run_dir}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_train_saves_a_single_output_model_with_the_training_logits(tmp_path):
    from zoo.training.backup import load_latest

    run_dir = tmp_path / "run"
    proc = train(TINY, run_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    history = json.loads((run_dir / "metrics.json").read_text())["history"]
    terms = [k for k in history if k.endswith("_loss") and not k.startswith("val_")]
    assert len(terms) == 10  # wbce and dice on 5 outputs
    assert history["loss"][-1] == pytest.approx(sum(history[k][-1] for k in terms), rel=1e-4)

    saved = load_model(run_dir / "model.keras")  # safe_mode=True, no custom_objects
    best = load_model(run_dir / "checkpoints" / "best.keras")
    assert len(saved.outputs) == 1 and len(best.outputs) == 1
    assert not any(layer.name.startswith("head_aux_") for layer in saved.layers)
    # The training model, rebuilt from the run's last backup (aux heads included), gives the
    # saved model's logits as its first output (one epoch: the best epoch is the last).
    trained = type(saved)(**{**saved._config, "deep_supervision": True})
    backup = load_latest(run_dir / "backup")
    values = dict(zip(backup.meta["variables"], backup.arrays))
    assert any(name.startswith("head_aux_4/") for name in values)
    for variable in trained.weights:
        variable.assign(values[variable.path])
    x = np.random.default_rng(0).random((2, 64, 64, 3), dtype=np.float32)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(saved(x, training=False)),
        keras.ops.convert_to_numpy(trained(x, training=False)[0]),
        rtol=1e-5,
        atol=1e-5,
    )


def test_bad_level_weights_fail_before_training(tmp_path):
    run_dir = tmp_path / "run"
    proc = train([*TINY, "loss_level_weights=[1,2]"], run_dir)
    assert proc.returncode != 0
    assert "loss_level_weights=[1, 2]: expected 5 non-negative numbers" in proc.stderr
    assert not (run_dir / "backup").exists() and not (run_dir / "model.keras").exists()


def test_init_from_a_saved_model_starts_a_deep_supervised_run(tmp_path):
    from zoo.config.model import model_spec

    tiny = zoo.model_info("unet").tiny_config
    saved = zoo.create_model("unet", input_shape=(None, None, 3), **tiny)
    saved.save(tmp_path / "model.keras")
    values = {"name": "unet", **tiny, "deep_supervision": True}
    spec = model_spec({**values, "init_from": str(tmp_path / "model.keras")}, num_classes=1)
    model = spec.build(spec.initial_weights())
    assert len(model.outputs) == 5
    own = {v.path: v for v in saved.weights}
    for variable in model.weights:
        if not variable.path.startswith("head_aux_"):
            np.testing.assert_array_equal(
                keras.ops.convert_to_numpy(variable), keras.ops.convert_to_numpy(own[variable.path])
            )


@pytest.mark.slow
def test_a_deep_supervised_run_resumes_from_its_backup(tmp_path):
    run_dir = tmp_path / "run"
    assert train(TINY, run_dir).returncode == 0
    proc = train([*TINY, "trainer.epochs=2"], run_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Resuming from" in proc.stdout + proc.stderr
    history = json.loads((run_dir / "metrics.json").read_text())["history"]
    assert len(history["loss"]) == 2 and len(history["dice_aux4_loss"]) == 2
    assert len(load_model(run_dir / "model.keras").outputs) == 1
