"""End to end through train.py: every registered model trains, writes its outputs, and bad input
fails early with one clear line without touching an earlier run's files."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from helpers import every_model_heavy
from PIL import Image

import zoo

ROOT = Path(__file__).resolve().parents[1]
# Tiny data and one short epoch: these tests check plumbing, not accuracy.
TINY = [
    "data.image_size=[64,64]",
    "data.train_size=16",
    "data.val_size=8",
    "data.batch_size=4",
    "trainer.epochs=1",
    "trainer.steps_per_epoch=2",
    "trainer.tensorboard=false",
    "trainer.num_overlays=2",
    "trainer.verbose=2",
]


def hydra_value(value):
    """A Python value as Hydra override syntax."""
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    if isinstance(value, list | tuple):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{hydra_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def tiny_model_overrides(name):
    # `++` replaces dict values (encoder_kwargs starts as an empty, closed dict).
    return [f"model={name}"] + [
        f"{'++' if isinstance(v, dict) else ''}model.{k}={hydra_value(v)}"
        for k, v in zoo.model_info(name).tiny_config.items()
    ]


def train(args, run_dir, timeout=600):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args, f"hydra.run.dir={run_dir}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize("name", every_model_heavy())
def test_every_model_trains_end_to_end(name, tmp_path):
    run_dir = tmp_path / "run"
    proc = train([*tiny_model_overrides(name), "loss=wbce+dice", *TINY], run_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert math.isfinite(metrics["val_dice"]) and 0.0 <= metrics["val_dice"] <= 1.0
    assert metrics["model"] == name and metrics["scored_at"] == "image_size"
    for term in ("loss", "wbce_loss", "dice_loss", "val_dice"):
        assert term in metrics["history"], term
    # The logged terms add up to the total loss (weights 1 and 1).
    h = metrics["history"]
    assert h["loss"][-1] == pytest.approx(h["wbce_loss"][-1] + h["dice_loss"][-1], rel=1e-4)
    assert (run_dir / "train_log.csv").read_text().count("\n") == 2  # header + 1 epoch
    assert "loss" in (run_dir / "config.yaml").read_text()
    overlays = sorted((run_dir / "overlays").glob("*.png"))
    assert len(overlays) == 2
    assert Image.open(overlays[0]).size == (3 * 64, 64)  # image | truth | prediction

    from zoo.saving import load_model

    model = load_model(run_dir / "model.keras")
    assert [t.name for t in model.inputs] == ["image"]  # the bare inference model
    out = model.predict(np.zeros((1, 64, 96, 3), np.float32), verbose=0)
    assert out.shape == (1, 64, 96, 1)


@pytest.fixture(scope="module")
def trained_unet(tmp_path_factory):
    """A tiny binary U-Net trained for two steps: the checkpoint of the evaluate/predict tests."""
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    proc = train([*tiny_model_overrides("unet"), *TINY], run_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


def test_evaluate_and_predict_modes(trained_unet, tmp_path):
    run_dir = trained_unet
    ckpt = run_dir / "model.keras"
    proc = train(["mode=evaluate", f"checkpoint={ckpt}", *TINY], tmp_path / "eval")
    assert proc.returncode == 0, proc.stderr[-2000:]
    evaluated = json.loads((tmp_path / "eval" / "eval_metrics.json").read_text())
    trained = json.loads((run_dir / "metrics.json").read_text())
    # Same model, same validation data: the same exact Dice.
    assert evaluated["val_dice"] == pytest.approx(trained["val_dice"], abs=1e-6)

    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        Image.fromarray(np.full((40, 56, 3), 60 * i, np.uint8)).save(images / f"im{i}.png")
    masks = tmp_path / "masks"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "zoo.predict",
            "--model",
            str(ckpt),
            "--input",
            str(images),
            "--output",
            str(masks),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    written = sorted(masks.glob("*.png"))
    assert [p.name for p in written] == ["im0.png", "im1.png"]
    m = np.asarray(Image.open(written[0]))
    assert m.shape == (40, 56) and set(np.unique(m)) <= {0, 255}


@pytest.mark.slow
def test_multirun_sweep_writes_comparison_table(tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    args = [*tiny_model_overrides("unet"), *TINY, "trainer.num_overlays=0"]
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "train.py"),
            "--multirun",
            "loss=wbce,dice",
            *args,
            f"hydra.sweep.dir={tmp_path}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = (tmp_path / "comparison.md").read_text()
    rows = [line for line in table.splitlines()[2:] if line.startswith("|")]
    assert len(rows) == 2
    assert {"wbce", "dice"} == {r.split("|")[3].strip() for r in rows}
    for row in json.loads((tmp_path / "comparison.json").read_text())["runs"]:
        assert math.isfinite(row["val_dice"]) and row["status"] == "ok"


def write_pair(root, stem, image, mask):
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    if image is not None:
        if isinstance(image, np.ndarray) and image.dtype == np.float32:
            np.save(root / "images" / f"{stem}.npy", image)
        elif isinstance(image, bytes):
            (root / "images" / f"{stem}.png").write_bytes(image)
        else:
            Image.fromarray(image).save(root / "images" / f"{stem}.png")
    if mask is not None:
        Image.fromarray(mask).save(root / "masks" / f"{stem}.png")


def folder(tmp_path, bad=None):
    """A small valid folder dataset, then one bad item of the given kind."""
    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    for i in range(6):
        write_pair(
            root,
            f"ok{i}",
            rng.integers(0, 255, (32, 32, 3), dtype=np.uint8),
            (rng.random((32, 32)) > 0.5).astype(np.uint8),
        )
    img = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    if bad == "no_mask":
        write_pair(root, "lonely", img, None)
    elif bad == "size":
        write_pair(root, "mismatch", img, np.zeros((16, 32), np.uint8))
    elif bad == "range":
        write_pair(root, "range", img, np.full((32, 32), 7, np.uint8))
    elif bad == "nan":
        arr = rng.random((32, 32, 3)).astype(np.float32)
        arr[3, 3, 0] = np.nan
        write_pair(root, "nan", arr, np.zeros((32, 32), np.uint8))
    elif bad == "corrupt":
        write_pair(root, "corrupt", b"not a png at all", np.zeros((32, 32), np.uint8))
    return root


FOLDER = [
    "data=folder",
    "data.image_size=[32,32]",
    "data.batch_size=2",
    "trainer.epochs=1",
    "trainer.steps_per_epoch=1",
    "trainer.tensorboard=false",
]


@pytest.mark.parametrize(
    "args,needle",
    [
        (["model=unte"], "unte"),
        (["loss=wbce+dcie"], "dcie"),
        (["strategy=mirorred"], "mirorred"),
        (["data.weight_map=borders"], "borders"),
        (["data=folder", "data.root=/nonexistent/segzoo-data"], "/nonexistent/segzoo-data"),
        (["folder:no_mask"], "lonely"),
        (["folder:size"], "mismatch"),
        (["folder:range"], "range"),
        (["folder:nan"], "nan"),
        (["folder:corrupt"], "corrupt"),
        (["trainer.time_budget=3 parsecs"], "trainer.time_budget='3 parsecs'"),
        # Both on the command line (Hydra's task overrides): which one is meant is unclear.
        (["trainer.time_budget=1m", "trainer.epochs=3"], "are both set on the command line"),
    ],
)
def test_bad_input_fails_early_and_leaves_earlier_outputs(args, needle, tmp_path):
    if args[0].startswith("folder:"):
        args = [*FOLDER, f"data.root={folder(tmp_path, args[0].split(':')[1])}"]
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    earlier = {"metrics.json": b'{"val_dice": 0.93}\n', "model.keras": b"earlier model bytes"}
    for name, content in earlier.items():
        (run_dir / name).write_bytes(content)
    proc = train(args, run_dir, timeout=300)
    assert proc.returncode != 0
    # Hydra's composition errors list the choices over a few lines; ours are one "Error:" line.
    assert needle in proc.stderr, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) <= 1
    assert "Traceback" not in proc.stderr
    for name, content in earlier.items():
        assert (run_dir / name).read_bytes() == content
    assert not (run_dir / "train_log.csv").exists()


def one_error_line(proc) -> str:
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


def test_evaluate_refuses_a_model_that_does_not_fit_the_data(trained_unet, tmp_path):
    ckpt = trained_unet / "model.keras"
    line = one_error_line(
        train(["mode=evaluate", f"checkpoint={ckpt}", *TINY, "data.num_classes=5"], tmp_path / "e")
    )
    assert "predicts 1 channel(s) but the data has data.num_classes=5" in line
    assert not (tmp_path / "e" / "eval_metrics.json").exists()


def test_evaluate_without_validation_data_is_an_error_not_a_perfect_score(trained_unet, tmp_path):
    ckpt = trained_unet / "model.keras"
    args = ["mode=evaluate", f"checkpoint={ckpt}", *FOLDER, f"data.root={folder(tmp_path)}"]
    line = one_error_line(train([*args, "data.val_ratio=0"], tmp_path / "e"))
    assert "no validation samples" in line
    assert not (tmp_path / "e" / "eval_metrics.json").exists()


def test_the_documented_multiclass_command_trains(tmp_path):
    # docs/data.md: `python train.py data.num_classes=5` (the default loss follows the data).
    proc = train([*tiny_model_overrides("unet"), *TINY, "data.num_classes=5"], tmp_path / "run")
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["loss"] == "wce+dice" and "wce_loss" in metrics["history"]


def test_background_class_leaves_the_background_out_of_val_dice(tmp_path):
    run = tmp_path / "run"
    multi = [*tiny_model_overrides("unet"), *TINY, "data.num_classes=5"]
    proc = train([*multi, "data.background_class=0"], run)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((run / "metrics.json").read_text())
    fg = [m[f"val_dice_{k}"] for k in range(1, 5) if not math.isnan(m[f"val_dice_{k}"])]
    assert fg and m["val_dice"] == pytest.approx(np.mean(fg), abs=1e-6)
    assert m["val_dice"] != pytest.approx(np.mean([*fg, m["val_dice_0"]]), abs=1e-6)
    model = keras.saving.load_model(run / "model.keras")
    assert model.metadata["background_class"] == 0
    # A saved model is evaluated as it was trained, without repeating the key.
    proc = train(["mode=evaluate", f"checkpoint={run / 'model.keras'}", *multi], tmp_path / "e")
    assert proc.returncode == 0, proc.stderr[-3000:]
    evaluated = json.loads((tmp_path / "e" / "eval_metrics.json").read_text())
    assert evaluated["val_dice"] == pytest.approx(m["val_dice"], abs=1e-6)


@pytest.mark.parametrize("where", ["proc", "file"])
def test_an_unwritable_run_dir_ends_in_one_line(where, tmp_path):
    if where == "proc":
        run_dir = Path("/proc/segzoo-test-run")  # read-only even for root
    else:
        (tmp_path / "a_file").write_text("")
        run_dir = tmp_path / "a_file" / "run"
    line = one_error_line(train([*TINY], run_dir, timeout=120))
    assert str(run_dir) in line


def sweep(args, sweep_dir, timeout=900):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "--multirun", *args,
         f"hydra.sweep.dir={sweep_dir}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_a_bad_sweep_value_stops_the_sweep_before_the_first_job(tmp_path):
    proc = sweep([*tiny_model_overrides("unet"), *TINY, "loss=wbce,dcie"], tmp_path)
    line = one_error_line(proc)
    assert "sweep job 1" in line and "dcie" in line
    assert not [p for p in tmp_path.iterdir() if p.is_dir()]  # no job ran


@pytest.mark.slow
def test_a_failing_sweep_job_does_not_stop_the_others(tmp_path):
    good = folder(tmp_path)
    args = [*tiny_model_overrides("unet"), *FOLDER, "trainer.num_overlays=0"]
    proc = sweep([*args, f"data.root={good},{tmp_path / 'missing'}"], tmp_path / "sweep")
    assert proc.returncode == 1
    rows = json.loads((tmp_path / "sweep" / "comparison.json").read_text())["runs"]
    assert [r["status"] for r in rows] == [
        "ok",
        f"failed: data.root not found: '{tmp_path / 'missing'}' (data=folder data.root=/path)",
    ]
    assert "failed: data.root not found" in (tmp_path / "sweep" / "comparison.md").read_text()


# --- How long a run trains: time budget, max_steps, recipe=auto (docs/training.md) -------------

TINY_UNET = [
    "model.encoder=resnet18",
    "+model.encoder_kwargs.base_width=8",
    "model.decoder_channels=[16,8,8,8,8]",
    "trainer.tensorboard=false",
    "trainer.num_overlays=0",
    "trainer.verbose=0",
]


def squares_folder(root: Path, n: int = 10, size: int = 48) -> Path:
    """n gray tiles with three bright 8x8 squares each (masks 0/255), no orientation."""
    rng = np.random.default_rng(1)
    for i in range(n):
        mask = np.zeros((size, size), np.uint8)
        for _ in range(3):
            y, x = rng.integers(2, size - 10, 2)
            mask[y : y + 8, x : x + 8] = 255
        image = np.clip(15 + (mask > 0) * 180 + rng.normal(0, 4, mask.shape), 0, 255)
        write_pair(root, f"t{i:02d}", image.astype(np.uint8), mask)
    return root


def test_folder_defaults_end_to_end(tmp_path):
    # data=folder with its defaults (image_size: null, resize: crop): 32x32 tiles train whole.
    run_dir = tmp_path / "run"
    args = ["data=folder", f"data.root={folder(tmp_path)}", "data.batch_size=2",
            "trainer.max_steps=2", *TINY_UNET]  # fmt: skip
    proc = train(args, run_dir, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["image_size"] == [32, 32] and metrics["steps"] == 2
    assert "image_size: null" in (run_dir / "config.yaml").read_text()  # what the user asked


def test_folder_resample_end_to_end(tmp_path):
    # data.resample=0.5: 96 px tiles train as 48 px images (32 px crops for the divisor 32),
    # the model records the scale and the final Dice is scored on the stored 96 px files.
    root = squares_folder(tmp_path / "data", n=6, size=96)
    run_dir = tmp_path / "run"
    args = ["data=folder", f"data.root={root}", "data.resample=0.5", "data.batch_size=2",
            "trainer.max_steps=2", "trainer.final_eval=full_resolution", *TINY_UNET]  # fmt: skip
    proc = train(args, run_dir, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["image_size"] == [32, 32] and metrics["scored_at"] == "full_resolution"
    assert 0.0 <= metrics["val_dice"] <= 1.0

    from zoo.inference import predict
    from zoo.saving import load_model

    model = load_model(run_dir / "model.keras")
    assert model.metadata["input_scale"] == [0.5, 0.5]
    image = np.asarray(Image.open(root / "images" / "t00.png").convert("RGB")) / 255.0
    probs = predict(model, image.astype(np.float32), tile=None)
    assert probs.shape == (96, 96, 1)  # predicted at 0.5x, returned at the stored size


def test_recipe_auto_with_max_steps_end_to_end(tmp_path):
    # ~10 s of training: the recipe plans from the folder, the command line keeps its keys,
    # and 12 steps with a validation every 5 give validations at steps 5, 10 and 12.
    root = squares_folder(tmp_path / "data")
    run_dir = tmp_path / "run"
    args = ["recipe=auto", "data=folder", f"data.root={root}", "trainer.max_steps=12",
            "trainer.val_every_steps=5", "trainer.verbose=0", "trainer.num_overlays=0",
            "trainer.tensorboard=false", "data.augment.contrast=0.05"]  # fmt: skip
    proc = train(args, run_dir, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    logged = proc.stdout + proc.stderr
    assert "Recipe (recipe=auto): 8 train / 2 val images of 48x48" in logged
    assert "data.augment.contrast" in logged and "set on the command line" in logged
    config = (run_dir / "config.yaml").read_text()
    # Planned: native 48 px tiles, the VGG U-Net at width 16 with its full-resolution skip,
    # rot90.
    for line in ("resize: crop", "encoder: vgg13_bn", "base_width: 16", "rot90: true",
                 "full_resolution_skip: true", "contrast: 0.05", "max_steps: 12"):  # fmt: skip
        assert line in config, line
    fp = json.loads((run_dir / "fingerprint.json").read_text())
    assert fp["object_extent"]["median"] == 8 and fp["image_size_median"] == [48, 48]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 12 and metrics["image_size"] == [48, 48]
    assert metrics["length"] == {"kind": "steps", "interval": 5, "total_steps": 12}
    assert len(metrics["history"]["val_dice"]) == 3  # steps 5, 10, 12
    assert (run_dir / "train_log.csv").read_text().count("\n") == 1 + 3
    timing = metrics["timing"]
    for phase in ("startup_s", "fingerprint_s", "train_s", "evaluate_s", "export_s"):
        assert timing[phase] >= 0, phase
    parts = sum(timing[p] for p in ("startup_s", "fingerprint_s", "train_s", "evaluate_s",
                                    "export_s"))  # fmt: skip
    assert parts <= timing["total_s"] + 0.01
    # Trained with every flip: the model predicts with the 4 flipped views by default, and
    # the final Dice was scored that way, on the whole validation files.
    assert "tta: flip" in config and metrics["scored_at"] == "full_resolution"
    from zoo.saving import load_model

    assert load_model(run_dir / "model.keras").metadata["tta"] == "flip"


def test_recipe_auto_shrinks_large_images_end_to_end(tmp_path):
    # 320 x 288 RGB images, each mostly one blob (it spans the image): the 256 px CPU window
    # holds a whole image at 256 / 320 = 0.8x, so the plan resamples, trains at 256 x 230,
    # scores the stored files and the saved model predicts at the stored size.
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[:320, :288]
    for i in range(6):
        cy, cx = rng.integers(140, 180), rng.integers(120, 160)
        mask = (((yy - cy) / 120.0) ** 2 + ((xx - cx) / 110.0) ** 2 <= 1).astype(np.uint8)
        image = np.stack([40 + 150 * mask, 90 + 0 * mask, 160 - 100 * mask], -1)
        image = np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)
        write_pair(tmp_path / "data", f"p{i}", image, mask * 255)
    run_dir = tmp_path / "run"
    args = ["recipe=auto", "data=folder", f"data.root={tmp_path / 'data'}", "trainer.max_steps=2",
            "trainer.verbose=0", "trainer.num_overlays=0", "trainer.tensorboard=false"]  # fmt: skip
    proc = train(args, run_dir, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    applied = json.loads((run_dir / "recipe.json").read_text())["applied"]
    assert applied["data.resample"] == 0.8 and applied["trainer.final_eval"] == "full_resolution"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["scored_at"] == "full_resolution"

    from zoo.inference import predict
    from zoo.saving import load_model

    model = load_model(run_dir / "model.keras")
    assert model.metadata["input_scale"] == [0.8, 0.8]
    image = np.asarray(Image.open(tmp_path / "data" / "images" / "p0.png")) / 255.0
    assert predict(model, image.astype(np.float32)).shape == (320, 288, 1)


@pytest.mark.slow  # a 30 s budget, then the checks of what it wrote
def test_time_budget_end_to_end(tmp_path):
    run_dir = tmp_path / "run"
    args = ["data.image_size=[32,32]", "data.train_size=16", "data.val_size=8",
            "data.batch_size=4", "trainer.time_budget=30s", *TINY_UNET]  # fmt: skip
    proc = train(args, run_dir, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Budget 30s:" in proc.stdout + proc.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    budget = metrics["budget"]
    plan = budget["plan"]
    assert budget["budget_s"] == 30.0 and plan["validation_every"] >= 10
    assert metrics["length"]["kind"] == "budget"
    if budget["stop"] == "planned steps done":
        assert metrics["steps"] == plan["total_steps"]
    else:
        assert budget["stop"] == "deadline" and metrics["steps"] < plan["total_steps"]
    # The loop stops before the next step plus a validation would pass the budget; only a
    # validation slower than measured (a loaded machine) can overshoot, by about its cost.
    assert budget["used_s"] <= 30.0 + 2 * max(budget["validation_s"] or [1.0])
    assert metrics["train_time_s"] <= budget["used_s"] + 1.0
    assert (
        len(metrics["history"]["val_dice"]) >= 2
        and (run_dir / "checkpoints" / "best.keras").exists()
    )
    assert (run_dir / "model.keras").exists()


def test_a_budget_too_short_for_one_step_ends_in_one_line(tmp_path):
    run_dir = tmp_path / "run"
    args = ["data.image_size=[32,32]", "data.train_size=8", "data.val_size=4",
            "data.batch_size=4", "trainer.time_budget=0.5s", *TINY_UNET]  # fmt: skip
    line = one_error_line(train(args, run_dir, timeout=600))
    assert "trainer.time_budget=0.5s is too short" in line and "give at least" in line
    assert not (run_dir / "model.keras").exists()


@pytest.mark.slow
def test_time_budget_resumes_with_the_remaining_budget(tmp_path):
    run_dir = tmp_path / "run"
    args = ["data.image_size=[32,32]", "data.train_size=16", "data.val_size=8",
            "data.batch_size=4", "trainer.time_budget=30s", *TINY_UNET,
            f"hydra.run.dir={run_dir}"]  # fmt: skip
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "tests/_fault_train.py", "TERM@30", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 143, proc.stderr[-3000:]
    from zoo.training.backup import load_latest

    state = load_latest(run_dir / "backup").meta["budget"]
    assert state["steps_done"] == 30 and 0 < state["elapsed_s"] < 30
    proc = train(args[:-1], run_dir, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    budget = metrics["budget"]
    # The second session had what the first left: the total is the one budget.
    assert budget["used_s"] <= 30.0 + 2 * max(budget["validation_s"] or [1.0])
    assert metrics["train_time_s"] <= budget["used_s"] - state["elapsed_s"] + 1.0
    assert metrics["steps"] > 30
