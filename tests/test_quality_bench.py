"""bench/quality*.py helpers without training: splits, stand-in data, Dice, run sizing, report.
(The matrix itself is a benchmark: `python -m bench.quality --smoke` checks its plumbing.)"""

from __future__ import annotations

import numpy as np
import pytest

from bench import quality, quality_baseline, quality_data


def test_grid_tiles_split_by_column():
    image = np.arange(512 * 512, dtype=np.int64).reshape(512, 512)
    train, val = quality_data.grid_tiles(image, image > 0, 128, val_col=3)
    assert len(train) == 12 and len(val) == 4
    assert all(name.endswith("c3") for name, _, _ in val)
    name, tile, _ = val[0]
    assert name == "r0c3" and tile[0, 0] == 384 and tile.shape == (128, 128)


def test_simulated_nuclei_are_deterministic_and_labelled():
    a = quality_data.simulate_nuclei(3, size=64, seed=5)
    b = quality_data.simulate_nuclei(3, size=64, seed=5)
    for (_, ia, ma), (_, ib, mb) in zip(a, b):
        assert np.array_equal(ia, ib) and np.array_equal(ma, mb)
        assert ia.dtype == np.uint8 and set(np.unique(ma)) <= {0, 1}
        # Nuclei are brighter than the background on average.
        assert ia[ma == 1].mean() > ia[ma == 0].mean() + 20


def test_simulated_aerial_tiles_are_deterministic_with_shadows_cast_one_way():
    from bench.quality_sim_aerial import SUN, simulate_aerial

    a = simulate_aerial(4, size=96, seed=2)
    b = simulate_aerial(4, size=96, seed=2)
    dy, dx = SUN
    lit, shaded = [], []
    for (_, ia, ma), (_, ib, mb) in zip(a, b):
        assert np.array_equal(ia, ib) and np.array_equal(ma, mb)
        assert ia.shape == (96, 96, 3) and ia.dtype == np.uint8 and set(np.unique(ma)) <= {0, 1}
        foot = ma.astype(bool)
        # Ground just beyond a footprint, on the side away from the sun and the side facing it.
        away = np.zeros_like(foot)
        away[dy:, dx:] = foot[:-dy, :-dx]
        toward = np.zeros_like(foot)
        toward[:-dy, :-dx] = foot[dy:, dx:]
        gray = ia.mean(axis=-1)
        shaded.append(gray[away & ~toward & ~foot])
        lit.append(gray[toward & ~away & ~foot])
    assert np.concatenate(shaded).mean() < 0.85 * np.concatenate(lit).mean()


def test_pooled_dice_hand_worked():
    p1, m1 = np.array([[1, 1, 0, 0]]), np.array([[1, 0, 0, 0]])  # tp 1, fp 1
    p2, m2 = np.array([[0, 0]]), np.array([[1, 1]])  # fn 2
    assert quality_baseline.pooled_dice([p1, p2], [m1, m2]) == pytest.approx(2 / (2 + 1 + 2))
    assert quality_baseline.pooled_dice([p2 * 0], [m2 * 0]) == 1.0


def test_run_sizing_from_a_calibration():
    cal = {"step_s": 0.5, "fixed_s": 10.0}
    # Previous default: 12 images / batch 8 -> 1 step per epoch, a 0.2 s validation per epoch:
    # (60 - 10 + 0.2) // (0.5 + 0.2) = 71 epochs.
    args, info = quality.size_default(60, cal, n_train=12, n_val=4, batch=8)
    assert args == ["trainer.epochs=71"] and info == {"epochs": 71, "steps_per_epoch": 1}
    # auto: plan_steps(50 s, 0.5 s, 0.2 s) = 96 steps, validation every 10, LR warm-up 4.
    args, info = quality.size_auto(60, cal, n_val=4, batch=8)
    assert args == ["trainer.epochs=10", "trainer.steps_per_epoch=10", "trainer.warmup_steps=4"]


def test_report_table_and_doc_markers(tmp_path):
    runs = [
        {"dataset": "dsb2018_nuclei", "recipe": r, "budget_s": b, "seed": s, "dice": d,
         "train_time_s": 400.0 if r == "default" else b}
        for r, b, s, d in [
            ("auto", 180.0, 0, 0.80), ("auto", 180.0, 1, 0.82), ("auto", 180.0, 2, 0.70),
            ("baseline", 180.0, 0, 0.75), ("default", 180.0, 0, 0.60), ("auto", 600.0, 0, 0.805),
        ]
    ]  # fmt: skip
    result = {"settings": {"seeds": 3, "cores": 2}, "summary": quality.summarize(runs)}
    cell = result["summary"]["dsb2018_nuclei"]["auto"]["180"]
    assert cell == {"median": 0.8, "n": 3, "time_ratio": 1.0}
    text = quality.markdown(result)
    # Cells with fewer seeds than the most-measured cell say how many they have.
    assert "median over seeds; (n) = seeds where not all were run" in text
    assert "| dsb2018_nuclei | microscopy | auto | 80.0 | 80.5 (1) |" in text
    assert "| dsb2018_nuclei | microscopy | default | 60.0* (1) | - |" in text  # 400 s of 180
    assert (
        "beats both by 1 point: met (80.00 vs 75.00, +5.00); within 1 point of 10 min: met (80.50)"
        in text
    )
    # A dataset excluded for bad labels is shown as such and never judged against the targets.
    excluded = [dict(r, dataset="spacenet_buildings") for r in runs]
    text = quality.markdown({**result, "summary": quality.summarize(runs + excluded)})
    assert "| spacenet_buildings (excluded) | aerial | auto | 80.0 | 80.5 (1) |" in text
    assert "- spacenet_buildings:" not in text
    doc = tmp_path / "q.md"
    doc.write_text(f"# Q\n{quality.DOC_START}\nold\n{quality.DOC_END}\ntail\n")
    quality.update_doc(doc, text, quality.DOC_START, quality.DOC_END)
    body = doc.read_text()
    assert "old" not in body and "80.5" in body and body.endswith("tail\n")


def test_learning_curves_by_share_of_the_run():
    from bench.quality_curves import at_fractions

    # Checkpoints at steps 30, 60, 90, 100: at 10%/20% of 100 steps none yet, at 30% the
    # first, 50% still the first (60 > 50), 100% the last.
    curve = [[30, 0.5], [60, 0.6], [90, 0.8], [100, 0.7]]
    assert at_fractions(curve) == [None, None, 0.5, 0.5, 0.5, 0.6, 0.6, 0.6, 0.8, 0.7]
    assert at_fractions([], parts=3) == [None, None, None]
    runs = [
        {"dataset": "dsb2018_nuclei", "recipe": "baseline", "budget_s": 180.0, "seed": 1,
         "dice": 0.81, "train_time_s": 180.0, "curve": curve},
        {"dataset": "dsb2018_nuclei", "recipe": "auto", "budget_s": 180.0, "seed": 0,
         "dice": 0.8, "train_time_s": 180.0, "curve": curve},
        {"dataset": "sim_fluo_nuclei", "recipe": "auto", "budget_s": 180.0, "seed": 0,
         "dice": 0.9, "train_time_s": 180.0, "curve": curve},
    ]  # fmt: skip
    text = quality.markdown(
        {"settings": {"seeds": 1, "cores": 2}, "summary": quality.summarize(runs), "runs": runs}
    )
    assert "dsb2018_nuclei, 3 min: validation Dice by share of the run's steps" in text
    row = "| 100 | - | - | 50.0 | 50.0 | 50.0 | 60.0 | 60.0 | 60.0 | 80.0 | 70.0 |"
    # auto before baseline; the stand-in has no curves table (it never counts for the targets).
    assert f"| auto | 0 {row} 80.0 |" in text and f"| baseline | 1 {row} 81.0 |" in text
    assert text.index("| auto | 0 ") < text.index("| baseline | 1 ")
    assert "sim_fluo_nuclei, 3 min" not in text


def test_report_merges_parts_run_separately():
    def run(recipe, seed, dice):
        return {"dataset": "dsb2018_nuclei", "recipe": recipe, "budget_s": 180.0,
                "seed": seed, "dice": dice, "train_time_s": 180.0}  # fmt: skip

    settings = {"seeds": 1, "cores": 2}
    first = {"settings": settings, "datasets": {"a": 1}, "runs": [run("auto", 0, 0.5)]}
    second = {  # a rerun of seed 0 replaces the first measurement
        "settings": settings,
        "datasets": {"b": 2},
        "runs": [run("auto", 0, 0.7), run("auto", 1, 0.9), run("auto", 2, 0.6)],
    }
    merged = quality.merge([first, second])
    assert merged["datasets"] == {"a": 1, "b": 2}
    assert sorted(r["dice"] for r in merged["runs"]) == [0.6, 0.7, 0.9]
    assert merged["summary"]["dsb2018_nuclei"]["auto"]["180"]["median"] == 0.7
    assert "(median of 3 seeds)" in quality.markdown(merged)
    assert "Variant" not in quality.markdown(merged)


def test_report_keeps_variants_apart():
    """Parts run with different --set overrides measure different recipes: never merged."""
    run = {"dataset": "dsb2018_nuclei", "recipe": "auto", "budget_s": 60.0, "seed": 0,
           "dice": 0.9, "train_time_s": 60.0}  # fmt: skip
    plain = {"settings": {"seeds": 1, "cores": 2, "overrides": []}, "runs": [run]}
    adamw = {"settings": {"seeds": 1, "cores": 2, "overrides": ["trainer.optimizer=adamw"]},
             "runs": [run]}  # fmt: skip
    with pytest.raises(SystemExit, match="different --set overrides"):
        quality.merge([plain, adamw])
    older = {"settings": {"seeds": 1, "cores": 2}, "runs": [run]}  # before --set existed
    assert quality.merge([older, plain])["runs"] == [run]
    text = quality.markdown(quality.merge([adamw]))
    assert "Variant: trainer.optimizer=adamw on every default and auto run." in text
    with pytest.raises(SystemExit, match="--set takes KEY=VALUE.*'adamw'"):
        quality.main(["--set", "adamw"])


def test_time_scale_trains_for_a_share_of_the_budget_shown(tmp_path, monkeypatch):
    """--time-scale 0.5: each run trains 90 s for the 3-minute cell, reported as 3 minutes;
    the budget check and the merge know it."""
    import argparse

    for split in ("train", "val"):
        (tmp_path / split / "images").mkdir(parents=True)
        (tmp_path / split / "images" / "a.png").write_bytes(b"")

    class Stop(Exception):
        pass

    seen = []

    def capture(args, *rest, **kw):
        seen.append(list(args))
        raise Stop

    monkeypatch.setattr(quality, "train_py", capture)
    monkeypatch.setattr(quality.subprocess, "run", capture)
    opts = argparse.Namespace(cores=2, calibrated=False, smoke=False, set=[], time_scale=0.5)
    for recipe in ("auto", "baseline"):
        with pytest.raises(Stop):
            quality.run_one("dsb2018_nuclei", tmp_path, recipe, 180.0, 0, opts)
    assert "trainer.time_budget=90s" in seen[0] and "recipe=auto" in seen[0]
    assert seen[1][seen[1].index("--budget") + 1] == "90.0"

    run = {"dataset": "dsb2018_nuclei", "recipe": "auto", "budget_s": 180.0, "seed": 0,
           "dice": 0.9, "train_time_s": 90.0, "time_scale": 0.5}  # fmt: skip
    scaled = {"settings": {"seeds": 1, "cores": 2, "time_scale": 0.5}, "runs": [run]}
    merged = quality.merge([scaled])
    assert merged["summary"]["dsb2018_nuclei"]["auto"]["180"]["time_ratio"] == 1.0
    text = quality.markdown(merged)
    assert "| 3 min |" in text and "| auto | 90.0 |" in text  # on time: no asterisk
    assert "each run trained for 0.5x the budget shown" in text
    full = {"settings": {"seeds": 1, "cores": 2}, "runs": [{**run, "time_scale": 1.0}]}
    with pytest.raises(SystemExit, match="--time-scale"):
        quality.merge([scaled, full])
    with pytest.raises(SystemExit, match="--time-scale must be in \\(0, 100\\], got 0"):
        quality.main(["--time-scale", "0"])


def test_report_keeps_machines_apart_and_fills_a_named_section(tmp_path):
    import json

    def part(flags, onednn, dice):
        run = {"dataset": "dsb2018_nuclei", "recipe": "auto", "budget_s": 180.0, "seed": 0,
               "dice": dice, "train_time_s": 180.0}  # fmt: skip
        machine = {"cpu_flags": flags, "onednn": onednn}
        return {"machine": machine, "settings": {"seeds": 1, "cores": 2}, "runs": [run]}

    avx512 = part(["avx2", "fma", "avx512f", "avx512_bf16"], True, 0.9)
    avx2 = part(["avx2", "fma"], False, 0.8)
    with pytest.raises(SystemExit, match="different machines"):
        quality.merge([avx512, avx2])
    assert quality.merge([avx2, part(["avx2", "fma"], False, 0.7)])["runs"][0]["dice"] == 0.7
    path = tmp_path / "avx2.json"
    path.write_text(json.dumps(avx2))
    doc = tmp_path / "q.md"
    main, second = quality.markers("tables"), quality.markers("avx2")
    doc.write_text(f"{main[0]}\nkeep\n{main[1]}\n{second[0]}\nold\n{second[1]}\n")
    assert quality.main(["report", str(path), "--doc", str(doc), "--section", "avx2"]) == 0
    body = doc.read_text()
    assert "keep" in body and "old" not in body and "| auto | 80.0 |" in body
    assert body.index("80.0") > body.index(second[0])


def test_evaluate_native_scores_at_stored_resolution(tmp_path):
    import keras
    from PIL import Image

    for split in ("val",):
        for sub in ("images", "masks"):
            (tmp_path / split / sub).mkdir(parents=True)
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 8:40] = 1
    Image.fromarray(mask * 255).save(tmp_path / "val" / "images" / "a.png")
    Image.fromarray(mask * 255).save(tmp_path / "val" / "masks" / "a.png")
    # logits = red channel - 0.5: the image is its own perfect prediction.
    model = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(1, 1)])
    model.layers[-1].set_weights([np.array([1.0, 0, 0]).reshape(1, 1, 3, 1), np.array([-0.5])])
    assert quality_baseline.evaluate_native(model, tmp_path) == 1.0
    # Through a 32x32 resize and back, only the edges may move.
    assert quality_baseline.evaluate_native(model, tmp_path, resize_to=[32, 32]) > 0.95


def test_evaluate_native_runs_a_resampled_model_at_its_scale(tmp_path):
    import keras
    from PIL import Image

    for sub in ("images", "masks"):
        (tmp_path / "val" / sub).mkdir(parents=True)
    # A 1-px checkerboard: the image is its own perfect prediction at the stored resolution,
    # but shrunk 2x (antialiased) it is a flat 0.5 gray.
    mask = (np.indices((64, 64)).sum(axis=0) % 2).astype(np.uint8)
    Image.fromarray(mask * 255).save(tmp_path / "val" / "images" / "a.png")
    Image.fromarray(mask * 255).save(tmp_path / "val" / "masks" / "a.png")
    model = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(1, 1)])
    model.layers[-1].set_weights([np.array([1.0, 0, 0]).reshape(1, 1, 3, 1), np.array([-0.4])])
    assert quality_baseline.evaluate_native(model, tmp_path) == 1.0
    # Recorded input scale 0.5 (data.resample=0.5): run at 32x32 as `predict` runs it, gray
    # 0.5 -> logit +0.1 everywhere -> all foreground: Dice 2 * 0.5 / (2 * 0.5 + 0.5) = 2/3.
    model.metadata = {"input_scale": [0.5, 0.5]}
    assert quality_baseline.evaluate_native(model, tmp_path) == pytest.approx(2 / 3, abs=1e-6)


def test_evaluate_native_averages_the_models_own_tta(tmp_path):
    import keras
    from PIL import Image

    for sub in ("images", "masks"):
        (tmp_path / "val" / sub).mkdir(parents=True)
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 8:40] = 1  # 32 px wide
    Image.fromarray(mask * 255).save(tmp_path / "val" / "images" / "a.png")
    Image.fromarray(mask * 255).save(tmp_path / "val" / "masks" / "a.png")
    # logit(x) = 10 * red(x - 1) - 4: the mask moved 1 px right, Dice 2 * 31 / 64 per row.
    model = keras.Sequential(
        [keras.Input((None, None, 3)), keras.layers.Conv2D(1, (1, 3), padding="same")]
    )
    kernel = np.zeros((1, 3, 3, 1))
    kernel[0, 0, 0, 0] = 10.0
    model.layers[-1].set_weights([kernel, np.array([-4.0])])
    assert quality_baseline.evaluate_native(model, tmp_path) == pytest.approx(31 / 32)
    # With its mirror averaged (sigmoid(6) + sigmoid(-4) > 1): foreground where either
    # neighbour is, columns 7..40, Dice 2 * 32 / (32 + 34).
    model.metadata = {"tta": "hflip"}
    assert quality_baseline.evaluate_native(model, tmp_path) == pytest.approx(32 / 33)
    assert quality_baseline.evaluate_native(model, tmp_path, tta="none") == pytest.approx(31 / 32)


def test_pooled_dice_multiclass_is_the_mean_over_foreground_classes():
    m = np.array([[0, 1, 1, 2, 2, 2]])
    p = np.array([[1, 1, 0, 2, 2, 0]])
    # class 1: tp 1, fp 1, fn 1 -> 2/4; class 2: tp 2, fn 1 -> 4/5; background not counted.
    got = quality_baseline.pooled_dice([p], [m], num_classes=3)
    assert got == pytest.approx((2 / 4 + 4 / 5) / 2)
    # A class absent from both masks and predictions is left out, not scored 1.
    assert quality_baseline.pooled_dice([p], [m], num_classes=4) == pytest.approx(got)


def test_evaluate_native_takes_the_arg_max_of_multiclass_logits(tmp_path):
    import keras
    from PIL import Image

    for sub in ("images", "masks"):
        (tmp_path / "val" / sub).mkdir(parents=True)
    ids = np.zeros((32, 32), np.uint8)
    ids[4:20, 4:20], ids[20:30, 10:30] = 1, 2
    image = np.zeros((32, 32, 3), np.uint8)
    image[ids == 1, 0], image[ids == 2, 1] = 255, 255
    Image.fromarray(image).save(tmp_path / "val" / "images" / "a.png")
    Image.fromarray(ids).save(tmp_path / "val" / "masks" / "a.png")
    # Logits (0.5, red, green): the arg-max is the class painted in.
    model = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(3, 1)])
    kernel = np.zeros((1, 1, 3, 3))
    kernel[0, 0, 0, 1] = kernel[0, 0, 1, 2] = 1.0
    model.layers[-1].set_weights([kernel, np.array([0.5, 0, 0])])
    assert quality_baseline.evaluate_native(model, tmp_path) == 1.0
    # Class 2 predicted as 1: class 1 Dice 2*256/(2*256+200) and class 2 scores 0.
    kernel[0, 0, 1, 1], kernel[0, 0, 1, 2] = 1.0, 0.0
    model.layers[-1].set_weights([kernel, np.array([0.5, 0, 0])])
    want = (2 * 256 / (2 * 256 + 200) + 0.0) / 2
    assert quality_baseline.evaluate_native(model, tmp_path) == pytest.approx(want)


def test_mri_tissue_builder_gives_the_most_probable_class(monkeypatch):
    t1 = np.full((2, 3), 9, np.uint8)
    gm = np.array([[200, 10, 60], [0, 100, 90]], np.uint8)
    wm = np.array([[20, 230, 100], [0, 120, 60]], np.uint8)
    calls = []

    def planes(files, make, maps):
        calls.append(maps)
        return [("z", *make(t1, gm, wm))], []

    monkeypatch.setattr(quality_data, "_mni_planes", planes)
    ((_, image, ids),) = quality_data.build_mni_tissue({})[0]
    assert calls == [("gm", "wm")] and image.dtype == np.uint8
    # background = 255 - gm - wm: [[35, 15, 95], [255, 35, 105]]
    np.testing.assert_array_equal(ids, [[1, 2, 2], [0, 2, 0]])


@pytest.mark.parametrize(
    "result,section",
    [("quality.json", "tables"), ("quality_avx2.json", "avx2"),
     ("quality_avx2_emulated.json", "avx2_emulated")],
)  # fmt: skip
def test_doc_tables_are_the_report_of_the_stored_results(result, section):
    # docs/quality.md's tables are rendered from bench/results, never edited by hand.
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    stored = json.loads((root / "bench" / "results" / result).read_text())
    doc = (root / "docs" / "quality.md").read_text()
    start, end = quality.markers(section)
    table = doc.split(start, 1)[1].split(end, 1)[0]
    assert table.strip() == quality.markdown(quality.merge([stored])).strip()
