"""Frozen and slower encoders through the app: model.freeze_encoder, model.init_from and
trainer.encoder_lr_mult (docs/training.md, "Fine-tuning"; the optimizer math is tested in
test_finetune.py)."""

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file
from test_app_channels import band_folder
from test_configs import make
from test_pretrained import random_torchvision_state
from test_train import train

import zoo
from zoo import optimizers
from zoo.config import TrainerConfig, validate
from zoo.config.model import model_spec
from zoo.errors import ConfigError, MissingFileError
from zoo.saving import load_model
from zoo.training.backup import build_optimizer_state, tracked_variables
from zoo.training.optim import build_optimizer

ROOT = Path(__file__).resolve().parents[1]
TINY = {"encoder": "resnet18", "encoder_kwargs": {"base_width": 8},
        "decoder_channels": [16, 8, 8, 8, 8]}  # fmt: skip
TINY_ARGS = ["model.encoder=resnet18", "+model.encoder_kwargs.base_width=8",
             "model.decoder_channels=[16,8,8,8,8]", "trainer.tensorboard=false",
             "trainer.verbose=0"]  # fmt: skip


def encoder_split(model):
    enc = {v.path: np.asarray(v) for v in model.weights if optimizers.is_encoder_variable(v)}
    rest = {v.path: np.asarray(v) for v in model.weights if v.path not in enc}
    return enc, rest


# --- The keys ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", zoo.list_models())
def test_every_model_takes_the_app_keys(name):
    # Defaults in conf/config.yaml: every model has them, none lists them in its own yaml.
    run = validate(make([f"model={name}", "model.freeze_encoder=true"]))
    assert run.model.freeze_encoder and run.model.init_from is None
    assert "freeze_encoder" not in run.model.kwargs and "init_from" not in run.model.kwargs
    assert run.model.kwargs["input_shape"] == (None, None, 3)


def test_app_keys_are_checked_in_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"model.freeze_encoder='yes'.*expected bool"):
        model_spec({"name": "unet", "freeze_encoder": "yes"}, 1)
    with pytest.raises(ConfigError, match=r"valid keys: .*freeze_encoder \(bool\).*init_from"):
        model_spec({"name": "unet", "freeze_encoders": True}, 1)
    with pytest.raises(ConfigError, match=r"model.init_from='w.h5'.*expected a .keras model"):
        model_spec({"name": "unet", "init_from": "w.h5"}, 1)
    with pytest.raises(MissingFileError, match="model.init_from=.*nope.keras: no such file"):
        model_spec({"name": "unet", "init_from": str(tmp_path / "nope.keras")}, 1)
    with pytest.raises(ConfigError, match="trainer.encoder_lr_mult=-0.5"):
        validate(make(["trainer.encoder_lr_mult=-0.5"]))


def test_frozen_spec_builds_the_same_trainable_set_every_time():
    # A resumed run rebuilds the model from the same config: freeze_encoder must give the
    # same trainable variables and optimizer slots, or the backup would not fit.
    spec = model_spec({"name": "unet", **TINY, "freeze_encoder": True}, 1)
    counts = []
    for _ in range(2):
        model = spec.build()
        assert model.encoder_frozen
        trainable = {id(v) for v in model.trainable_variables}
        assert not any(
            id(v) in trainable for v in model.weights if optimizers.is_encoder_variable(v)
        )
        import losses

        train_model = losses.attach(model, "wbce+dice", mode="binary")
        train_model.compile(optimizer=build_optimizer(TrainerConfig(), 10))
        build_optimizer_state(train_model)
        counts.append(len(tracked_variables(train_model)))
    unfrozen = model_spec({"name": "unet", **TINY}, 1).build()
    assert len(unfrozen.trainable_variables) > len(model.trainable_variables)
    assert counts[0] == counts[1]


@pytest.mark.parametrize("name,cls", [("adam", optimizers.Adam), ("adamw", optimizers.AdamW),
                                      ("sgd", optimizers.SGD)])  # fmt: skip
def test_encoder_lr_mult_reaches_the_optimizer(name, cls):
    run = validate(make([f"trainer.optimizer={name}", "trainer.encoder_lr_mult=0.1"]))
    opt = build_optimizer(run.trainer, 100)
    assert isinstance(opt, cls) and opt.encoder_lr_mult == pytest.approx(0.1)
    model = model_spec({"name": "unet", **TINY}, 1).build()
    opt.build(model.trainable_variables)
    mults = dict(zip([v.path for v in model.trainable_variables], opt._lr_mults))
    encoder = {v.path for v in model.trainable_variables if optimizers.is_encoder_variable(v)}
    assert encoder and set(mults) - encoder
    assert all(m == pytest.approx(0.1 if p in encoder else 1.0) for p, m in mults.items())
    if name == "sgd":
        assert opt.momentum == pytest.approx(0.9) and opt.nesterov
    default = build_optimizer(validate(make([f"trainer.optimizer={name}"])).trainer, 100)
    assert default.encoder_lr_mult == 1.0


@pytest.mark.parametrize("name,decays", [("adam", False), ("adamw", True), ("sgd", True)])
def test_weight_decay_reaches_adamw_and_sgd_kernels_only(name, decays):
    # Zero gradients: the only change a step makes is the decoupled decay, kernel *= 1 - lr * wd
    # (SGD took trainer.weight_decay silently without applying it before).
    import keras

    run = validate(make([f"trainer.optimizer={name}", "trainer.weight_decay=0.1",
                         "trainer.schedule=constant", "trainer.learning_rate=0.1"]))  # fmt: skip
    opt = build_optimizer(run.trainer, 10)
    layer = keras.layers.Dense(2, bias_initializer="ones")
    layer.build((None, 3))
    kernel, bias = np.asarray(layer.kernel), np.asarray(layer.bias)
    opt.apply_gradients([(np.zeros_like(kernel), layer.kernel), (np.zeros_like(bias), layer.bias)])
    np.testing.assert_allclose(np.asarray(layer.kernel), kernel * (0.99 if decays else 1.0), 1e-6)
    np.testing.assert_array_equal(np.asarray(layer.bias), bias)


def test_init_from_loads_every_weight_or_names_the_misfit(tmp_path):
    weights = tmp_path / "resnet18_w8.safetensors"
    save_file(random_torchvision_state("resnet18", width=8), str(weights))
    saved = zoo.create_model("unet", num_classes=1, encoder_weights=str(weights), **TINY)
    for v in saved.trainable_weights:  # not the pretrained values: weights of its own
        v.assign(np.asarray(v) + 0.5)
    saved.save(tmp_path / "m.keras")
    weights.unlink()  # the weights come from init_from: the source is never read again
    values = {"name": "unet", **TINY, "encoder_weights": str(weights),
              "init_from": str(tmp_path / "m.keras")}  # fmt: skip
    spec = model_spec(values, 1)
    model = spec.build(spec.initial_weights())
    assert [v.path for v in saved.weights] == [v.path for v in model.weights]
    for a, b in zip(saved.weights, model.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)
    image = np.random.default_rng(0).random((1, 64, 64, 3), np.float32)
    np.testing.assert_array_equal(model(image).numpy(), saved(image).numpy())
    # The same variables, another function (no pretrained normalization): refused.
    fpn = {"name": "fpn", "encoder": "resnet18", "encoder_kwargs": {"base_width": 8},
           "init_from": values["init_from"]}  # fmt: skip
    misfits = [
        ({**values, "encoder_weights": None}, 1, 3, "built with model.encoder_weights='/"),
        (values, 3, 3, "this run has data.num_classes=3"),
        (values, 1, 4, "this run has data.channels=4"),
        ({**values, "decoder_channels": [16, 8, 8, 8, 4]}, 1, 3, "model.decoder_channels="),
        (fpn, 1, 3, "this run builds model=fpn"),
    ]
    about = r"holds a unet \(encoder resnet18, 1 class, 3 channels\), which this run's model"
    for bad, classes, channels, text in misfits:
        other = model_spec(bad, classes, channels)
        with pytest.raises(ConfigError, match=about) as info:
            other.build(other.initial_weights())
        assert text in str(info.value)


# --- Through train.py ------------------------------------------------------------------------


def test_fine_tuning_stages_through_train_py(tmp_path):
    """The documented recipe on a 4-band folder: a pretrained encoder, frozen while the
    decoder trains; then everything from that model, the encoder at a tenth of the rate."""
    root = band_folder(tmp_path / "bands", channels=4)
    weights = tmp_path / "resnet18_w8.safetensors"
    save_file(random_torchvision_state("resnet18", width=8), str(weights))
    common = ["data=folder", f"data.root={root}", "data.channels=4", "data.batch_size=2",
              "trainer.num_overlays=0", *TINY_ARGS]  # fmt: skip

    stage1 = tmp_path / "frozen"
    frozen_args = [*common, f"model.encoder_weights={weights}", "model.freeze_encoder=true"]
    proc = train([*frozen_args, "trainer.max_steps=1"], stage1)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Continued from its backup (the rebuilt model is frozen again, its optimizer fits).
    proc = train([*frozen_args, "trainer.max_steps=2"], stage1)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Resuming from" in proc.stdout + proc.stderr
    assert json.loads((stage1 / "metrics.json").read_text())["steps"] == 2
    frozen = load_model(stage1 / "model.keras")
    assert frozen.encoder_frozen and frozen.metadata["channels"] == 4
    built = zoo.create_model("unet", num_classes=1, input_shape=(None, None, 4),
                             encoder_weights=str(weights), **TINY)  # fmt: skip
    want, _ = encoder_split(built)
    got, rest = encoder_split(frozen)
    assert any(p.endswith("moving_mean") for p in got)  # batch-norm statistics included
    assert got.keys() == want.keys()
    for path in want:  # bitwise: the pretrained (4-band adapted) encoder, untouched
        np.testing.assert_array_equal(got[path], want[path], err_msg=path)
    # The decoder trained: its batch norms left their initial statistics (0 and 1).
    assert np.abs(rest["decoder_block1_conv1_bn/moving_mean"]).max() > 0

    stage2 = tmp_path / "all"
    weights.unlink()  # stage 2 starts from stage 1's file, never from the source again
    proc = train([*common, f"model.encoder_weights={weights}",
                  f"model.init_from={stage1 / 'model.keras'}",
                  "trainer.encoder_lr_mult=0.1", "trainer.max_steps=1", "trainer.schedule=constant",
                  "trainer.learning_rate=1e-5"], stage2)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    tuned = load_model(stage2 / "model.keras")
    assert not tuned.encoder_frozen
    assert json.loads((stage2 / "metrics.json").read_text())["steps"] == 1
    enc2, rest2 = encoder_split(tuned)
    # Started from stage 1: one step at lr 1e-5 moves no weight by more than ~1e-4 ...
    for path, value in {**got, **rest}.items():
        if "moving" not in path:
            np.testing.assert_allclose({**enc2, **rest2}[path], value, atol=1e-3, err_msg=path)
    # ... and the encoder trains again: its batch norms update their statistics.
    assert not np.array_equal(
        enc2["encoder_stem_bn/moving_mean"], got["encoder_stem_bn/moving_mean"]
    )


# --- Under a multi-worker strategy (two processes on localhost) ------------------------------

MW_ARGS = ["data.image_size=[32,32]", "data.train_size=16", "data.val_size=8",
           "data.augment.enabled=false", "trainer.max_steps=2", "trainer.num_overlays=0",
           "trainer.schedule=constant", "trainer.learning_rate=0.05", "trainer.optimizer=sgd",
           "trainer.momentum=0", *TINY_ARGS]  # fmt: skip


@pytest.mark.slow  # three train.py processes: ~1.5 min on 2 cores
@pytest.mark.parametrize(
    "case", ["freeze_export", "lr_mult"], ids=["freeze+export", "encoder_lr_mult"]
)
def test_multi_worker_runs_match_one_process(case, tmp_path):
    """Two workers (per-replica batch 2) train what one process does with batch 4: a frozen
    pretrained encoder stays bitwise as loaded and only the chief exports; an encoder
    multiplier with weight decay (its per-variable decay is a cross-replica update) gives
    the same weights. Plain SGD: Adam's normalized step magnifies summation-order noise."""
    import sys

    from test_multiworker import free_ports, run_all

    weights = tmp_path / "resnet18_w8.safetensors"
    save_file(random_torchvision_state("resnet18", width=8), str(weights))
    if case == "freeze_export":
        extra = [f"model.encoder_weights={weights}", "model.freeze_encoder=true",
                 "trainer.export=[saved_model]"]  # fmt: skip
    else:
        extra = ["trainer.weight_decay=0.1", "trainer.encoder_lr_mult=0.1"]

    def cmd(run_dir, batch, *more):
        return [sys.executable, str(ROOT / "train.py"), *MW_ARGS, *extra,
                f"data.batch_size={batch}", f"hydra.run.dir={run_dir}", *more]  # fmt: skip

    workers = [f"localhost:{p}" for p in free_ports(2)]
    cmds = []
    for i in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}}
        mw = cmd(tmp_path / "mw", 2, "strategy=multi_worker", "strategy.timeout_s=120")
        cmds.append(["env", f"TF_CONFIG={json.dumps(tf_config)}", *mw])
    results = run_all([*cmds, cmd(tmp_path / "single", 4)])
    for code, out in results:
        assert code == 0, out[-3000:]
    mw, single = (
        load_model(tmp_path / "mw" / "model.keras"),
        load_model(tmp_path / "single" / "model.keras"),
    )
    for a, b in zip(mw.weights, single.weights):
        np.testing.assert_allclose(
            np.asarray(a), np.asarray(b), rtol=1e-3, atol=1e-4, err_msg=a.path
        )
    if case == "freeze_export":
        built = zoo.create_model("unet", num_classes=1, encoder_weights=str(weights), **TINY)
        want, _ = encoder_split(built)
        got, _ = encoder_split(mw)
        for path in want:
            np.testing.assert_array_equal(got[path], want[path], err_msg=path)
        assert (tmp_path / "mw" / "model_saved_model").is_dir()
        metrics = json.loads((tmp_path / "mw" / "metrics.json").read_text())
        assert metrics["exports"]["saved_model"]["logits_error"] <= 1e-5
