"""zoo.recipe: budget arithmetic on a fake clock, fingerprints of hand-made datasets whose
statistics are known by construction, and the planner's choices for them."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zoo.recipe import (
    BudgetController,
    BudgetError,
    PhaseTimer,
    fingerprint_arrays,
    fingerprint_folder,
    format_duration,
    parse_duration,
    plan_recipe,
    plan_steps,
    user_keys_from_overrides,
)
from zoo.recipe.fingerprint import Fingerprint


class FakeClock:
    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


# --------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    "text,seconds",
    [("3m", 180), ("90s", 90), ("1h", 3600), ("1h30m", 5400), ("2m30s", 150), ("5min", 300),
     ("1.5h", 5400), (" 45 ", 45), (120, 120), (7.5, 7.5)],
)  # fmt: skip
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["3 parsecs", "", "0s", "-5s", "1m1h", "h", "abc", True, 0, -3])
def test_parse_duration_rejects_with_one_line(bad):
    with pytest.raises(BudgetError) as err:
        parse_duration(bad)
    msg = str(err.value)
    assert "\n" not in msg and "trainer.time_budget" in msg and repr(bad) in msg
    assert "90s" in msg and "1h30m" in msg


@pytest.mark.parametrize("seconds", [7.5, 90, 180, 5400, 3725])
def test_format_duration_round_trips(seconds):
    assert parse_duration(format_duration(seconds)) == seconds


# --------------------------------------------------------------------------- budget arithmetic


def test_plan_steps_hand_worked():
    # 170 s, 0.5 s/step, 2 s/validation: 10% of 170 s pays for 8 validations (16 s), the other
    # 154 s for 308 steps; 308 / 8 -> every 39 steps; LR warm-up 308 // 20 = 15.
    assert plan_steps(170, 0.5, 2.0) == (308, 39, 8, 15)
    # Cheap validations: 15 wanted, but never closer than 10 steps -> 10 validations, and the
    # 0.5 s saved buys one more step: (50 - 10 * 0.1) // 0.5 = 98.
    assert plan_steps(50, 0.5, 0.1) == (98, 10, 10, 4)
    # Nothing fits.
    assert plan_steps(0.4, 0.5, 0.0)[0] == 0


def _warm(ctl: BudgetController, clock: FakeClock, times: list[float], **kw):
    for t in times:
        clock.t += t
    return ctl.on_warmup_done(times, **kw)


def test_controller_plans_steps_from_measured_step_time():
    clock = FakeClock(0.0)
    ctl = BudgetController(180, clock=clock, warmup_steps=5)
    ctl.start()
    # The first step traces the graph (5 s); the median of the rest is 0.5 s.
    plan = _warm(ctl, clock, [5.0, 0.5, 0.52, 0.48, 0.5], val_batches=5)
    assert plan.step_time_s == 0.5
    assert plan.val_time_s == pytest.approx(1.0)  # 5 batches * 0.4 * 0.5 s
    # 173 s left after warm-up, minus 2% margin = 169.54 s: 15 validations (15 s), then
    # (169.54 - 15) // 0.5 = 309 steps, every ceil(309 / 15) = 21 steps.
    assert plan.steps_done == 5
    assert plan.total_steps == 5 + 309 == plan.schedule_steps
    assert plan.validation_every == 21 and plan.num_validations == 15
    assert plan.lr_warmup_steps == 314 // 20
    assert (plan.total_steps - 5) * 0.5 + plan.num_validations * 1.0 <= 173
    assert ctl.should_validate(21) and ctl.should_validate(42) and not ctl.should_validate(22)
    assert ctl.should_validate(plan.total_steps)
    # The first validation (with its checkpoint and backup writes) took 5 s, not 1 s: the steps
    # left are re-planned at the same interval. At step 21 (clock 15 + 5 = 20): 160 s left,
    # 156.8 after the margin; 210 steps + ceil(210 / 21) = 10 validations = 105 + 50 = 155 s
    # fit, 211 steps would need 11 (160.5 s). 21 + 210 = 231 is > 10% off 314: new length.
    clock.t = 20.0
    replanned = ctl.on_validation_done(5.0, step=21)
    assert replanned.total_steps == replanned.schedule_steps == 231
    assert replanned.num_validations == 10 and replanned.val_time_s == 5.0
    # Within 10% of the plan: the length stays (no LR jumps from timing noise).
    assert ctl.on_validation_done(4.6, step=21).total_steps == 231
    clock.t = 100.0
    assert not ctl.should_stop(150)
    assert ctl.should_stop(231) and ctl.stop_reason == "planned steps done"
    # Steps slower than measured: the deadline (next step + final validation) stops the run.
    clock.t = 179.0
    assert ctl.should_stop(200) and ctl.stop_reason == "deadline"


def test_resume_recomputes_the_remaining_budget():
    clock = FakeClock(0.0)
    ctl = BudgetController(180, clock=clock)
    ctl.start()
    first = _warm(ctl, clock, [5.0, 0.5, 0.5, 0.5, 0.5], val_batches=5)
    clock.t = 79.5  # interrupted after step 150
    state = ctl.state(step=150)
    assert state["elapsed_s"] == 79.5 and state["steps_done"] == 150

    # Same speed after the restart: 94.5 s remain, the plan fits within 10% of the old
    # schedule, so the LR schedule (314 steps) is kept instead of bending it.
    clock2 = FakeClock(1000.0)
    again = BudgetController.resume(180, state, clock=clock2)
    again.start()
    plan = _warm(again, clock2, [4.0, 0.5, 0.5, 0.5, 0.5], val_batches=5)
    assert again.remaining() == pytest.approx(180 - 79.5 - 6.0)
    assert plan.deadline_s == pytest.approx(1000 + 100.5)
    assert plan.steps_done == 155
    assert plan.total_steps == plan.schedule_steps == first.schedule_steps == 314
    assert plan.lr_warmup_steps == first.lr_warmup_steps

    # A machine twice as slow: the 8 s warm-up leaves 92.5 s, 90.65 s after the margin; 10% of
    # it pays 4 validations of 2 s, the rest (90.65 - 8) // 1 = 82 steps -> a new schedule.
    clock3 = FakeClock(0.0)
    slow = BudgetController.resume(180, state, clock=clock3)
    slow.start()
    plan = _warm(slow, clock3, [4.0, 1.0, 1.0, 1.0, 1.0], val_batches=5)
    assert plan.total_steps == plan.schedule_steps == 155 + 82
    assert plan.validation_every == 21 and plan.num_validations == 4

    # Budget already used up.
    used = BudgetController.resume(60, state, clock=FakeClock(0.0))
    used.start()
    with pytest.raises(BudgetError, match="used up"):
        used.on_warmup_done([0.5, 0.5])


def test_budget_too_short_for_one_step_is_one_line():
    clock = FakeClock(0.0)
    ctl = BudgetController(5, clock=clock, warmup_steps=3)
    ctl.start()
    with pytest.raises(BudgetError) as err:
        _warm(ctl, clock, [3.0, 0.5, 0.5], val_batches=5)
    msg = str(err.value)
    assert "\n" not in msg and "too short" in msg and "time_budget=5s" in msg
    need = parse_duration(msg.rsplit("give at least ", 1)[1])
    assert need > 5  # the suggestion would fit: 4 s used + a step + a validation
    with pytest.raises(RuntimeError, match="start"):
        BudgetController(60).on_warmup_done([0.1])


def test_whole_process_rule_reserves_the_tail():
    # Started 20 s before training; 120 s budget; evaluation + export take ~15 s: training must
    # end by -20 + 120 + 30 - 15 = 115 to finish the process within budget + 30 s.
    clock = FakeClock(0.0)
    ctl = BudgetController(120, clock=clock, process_start=-20.0, tail_estimate_s=15.0)
    ctl.start()
    assert _warm(ctl, clock, [1.0, 0.2], val_batches=1).deadline_s == pytest.approx(115.0)
    # Under a minute the rule does not apply: the training budget alone counts.
    clock = FakeClock(0.0)
    ctl = BudgetController(50, clock=clock, process_start=-20.0, tail_estimate_s=15.0)
    ctl.start()
    assert _warm(ctl, clock, [1.0, 0.2], val_batches=1).deadline_s == pytest.approx(50.0)


def test_phase_timer_on_fake_clock():
    clock = FakeClock(0.0)
    timer = PhaseTimer(clock=clock)
    with timer.phase("startup"):
        clock.t += 2.5
    with timer.phase("export"):
        clock.t += 1.0
    assert timer.as_dict() == {"startup_s": 2.5, "export_s": 1.0}


# --------------------------------------------------------------------------- fingerprints


def squares_dataset(n=16, size=64, oriented=False, seed=0):
    """n gray images with 4 separate 10x10 bright squares on a dark background.

    Squares sit in distinct cells of a 4x4 grid of 16 px cells, offset 1..5 px inside the cell,
    so they never touch each other or the border. `oriented`: squares only in the bottom half
    and a background getting darker from top to bottom.
    """
    rng = np.random.default_rng(seed)
    images, masks = [], []
    for _ in range(n):
        mask = np.zeros((size, size), np.int32)
        cells = rng.choice(8, 4, replace=False) + 8 if oriented else rng.choice(16, 4, False)
        for c in cells:
            y, x = (c // 4) * 16 + rng.integers(1, 6), (c % 4) * 16 + rng.integers(1, 6)
            mask[y : y + 10, x : x + 10] = 1
        bg = np.linspace(120, 0, size)[:, None] if oriented else 10.0
        img = bg + mask * 190 + rng.normal(0, 3, (size, size))
        images.append(np.clip(img, 0, 255).astype(np.uint8))
        masks.append(mask)
    return images, masks


@pytest.fixture(scope="module")
def plain_fp() -> Fingerprint:
    return fingerprint_arrays(*squares_dataset())


@pytest.fixture(scope="module")
def oriented_fp() -> Fingerprint:
    return fingerprint_arrays(*squares_dataset(oriented=True, seed=1))


def test_fingerprint_of_known_squares(plain_fp):
    fp = plain_fp
    assert fp.num_train == 16 and fp.channels == 1 and fp.storage == "uint8"
    assert fp.same_size and fp.image_size_median == [64, 64]
    assert fp.class_frequencies[1] == pytest.approx(400 / 4096, abs=1e-6)
    assert fp.object_extent["min"] == fp.object_extent["max"] == 10
    # Equivalent-circle diameter of a 10x10 square: 2 * sqrt(100 / pi).
    assert fp.object_diameter["median"] == pytest.approx(2 * math.sqrt(100 / math.pi), abs=1e-3)
    assert fp.objects_per_image["min"] == fp.objects_per_image["max"] == 4
    assert fp.border_object_fraction == 0 and fp.border_image_fraction == 0
    assert fp.foreground_image_fraction == 1.0
    assert fp.orientation["oriented"] is False and fp.orientation["left_right"] is False
    assert max(fp.orientation[k] for k in ("vertical", "horizontal", "transpose")) < 2.5
    assert fp.microscopy["likely"] and fp.microscopy["dark_background"]


@pytest.mark.parametrize(
    "foreground, weight",
    [(0.01, round(math.sqrt(99), 2)), (0.04, round(math.sqrt(24), 2)), (0.001, 10.0),
     (0.05, None), (0.155, None)],
)  # fmt: skip
def test_only_a_rare_foreground_is_up_weighted(plain_fp, foreground, weight):
    # Below 5% BCE weighs the foreground by sqrt(background / foreground), capped at 10;
    # from 5% on the loss is plain BCE + Dice.
    import dataclasses

    fp = dataclasses.replace(plain_fp, class_frequencies=[1 - foreground, foreground])
    r = plan_recipe(fp, budget_s=180, cores=2)
    assert r.get("loss") == "wbce+dice"
    assert r.overrides().get("loss_options.wbce.pos_weight") == weight
    reasons = {c.key: c.reason for c in r.choices}
    assert reasons["model.encoder"].startswith("CPU: full-resolution")  # each keeps its reason


def test_fingerprint_detects_orientation(oriented_fp):
    o = oriented_fp.orientation
    assert o["oriented"] is True and o["vertical"] >= 2.5
    assert o["left_right"] is False  # nothing distinguishes left from right
    assert not oriented_fp.microscopy["likely"]  # bright, graded background


def test_fluorescence_needs_objects_that_are_the_brightest():
    # Dark surroundings, one channel, labelled structure brighter than the mean background,
    # but a brighter unlabelled structure beside it (gray matter next to white matter in a
    # T1 MRI): not fluorescence-like. Without the brighter neighbour it is.
    rng = np.random.default_rng(3)
    images, masks, plain = [], [], []
    for _ in range(8):
        mask = np.zeros((64, 64), np.int32)
        mask[20:44, 10:20] = 1  # labelled, intensity 120
        img = np.full((64, 64), 5.0)
        img[20:44, 10:20] = 120
        plain.append(np.clip(img + rng.normal(0, 2, img.shape), 0, 255).astype(np.uint8))
        img[20:44, 24:44] = 220  # unlabelled and brighter: 480 of 3856 background pixels
        images.append(np.clip(img + rng.normal(0, 2, img.shape), 0, 255).astype(np.uint8))
        masks.append(mask)
    mri_like = fingerprint_arrays(images, masks).microscopy
    assert mri_like["dark_background"] and mri_like["bright_objects"]
    assert not mri_like["objects_brightest"] and not mri_like["likely"]
    fluo = fingerprint_arrays(plain, masks).microscopy
    assert fluo["objects_brightest"] and fluo["likely"]
    # Both structures labelled, as classes 1 and 2 (gray and white matter): the union is the
    # brightest part of the image, but class 1 is not, so it is still not fluorescence-like;
    # merged into one foreground it would be.
    tissue = []
    for mask in masks:
        both = mask.copy()
        both[20:44, 24:44] = 2
        tissue.append(both)
    per_class = fingerprint_arrays(images, tissue, num_classes=3).microscopy
    assert not per_class["objects_brightest"] and not per_class["likely"]
    merged = fingerprint_arrays(images, [np.minimum(t, 1) for t in tissue]).microscopy
    assert merged["objects_brightest"] and merged["likely"]


def _levels_dataset(levels):
    """Labelled structures at `levels` (one image each) beside an unlabelled one at 220."""
    images, masks = [], []
    for level in levels:
        mask = np.zeros((64, 64), np.int32)
        mask[8:40, 8:24] = 1
        img = np.full((64, 64), 5, np.uint8)
        img[8:40, 8:24] = level
        img[20:44, 30:50] = 220
        images.append(img)
        masks.append(mask)
    return images, masks


def test_intensity_jitter_follows_the_measured_variation():
    # Not fluorescence-like (a brighter unlabelled structure, 220), labelled structures at
    # 100, 106, 112, 118 in the four images: their median brightness has a population SD of
    # sqrt(45) = 6.708 gray levels; the used range tops at 220 (p99.5), so the spread is
    # 3.05% of it, the jitter 2x that = 0.061 (brightness in the used range's units).
    fp = fingerprint_arrays(*_levels_dataset((100, 106, 112, 118)))
    assert not fp.microscopy["likely"]
    assert fp.intensity["foreground_median_sd"][0] == pytest.approx(math.sqrt(45) / 255, abs=1e-5)
    r = plan_recipe(fp, budget_s=180)
    assert r.get("data.augment.contrast") == 0.061
    assert r.get("data.augment.brightness") == round(0.061 * 220 / 255, 4)
    # 100, 105, 110, 115: SD sqrt(31.25) = 5.590 levels, 2.54% of the range (< 3%): the
    # structures keep their brightness, no jitter. Identical images: none either.
    images, masks = _levels_dataset((100, 105, 110, 115))
    fp = fingerprint_arrays(images, masks)
    sd = fp.intensity["foreground_median_sd"][0]
    assert sd == pytest.approx(math.sqrt(31.25) / 255, abs=1e-5)
    r = plan_recipe(fp, budget_s=180)
    assert r.get("data.augment.contrast") == 0 and r.get("data.augment.brightness") == 0
    why = next(c.reason for c in r.choices if c.key == "data.augment.brightness")
    assert "2.5%" in why and "< 3%" in why
    same = fingerprint_arrays([images[0]] * 4, [masks[0]] * 4)
    assert same.intensity["foreground_median_sd"] == [0.0]
    assert plan_recipe(same, budget_s=180).get("data.augment.contrast") == 0
    # One image: nothing to measure, the mild default.
    one = fingerprint_arrays(images[:1], masks[:1])
    assert one.intensity["foreground_median_sd"] == []
    assert plan_recipe(one, budget_s=180).get("data.augment.contrast") == 0.1
    # Two classes: the 220 structure labelled 2, 480 px in the first two images and 800 px in
    # the last two. The union's median would jump from the class-1 level to 220 with the
    # classes' proportions; each class's own level is measured instead (class 2: no spread),
    # so the largest spread is class 1's 5.59 gray levels again.
    two_images, two = [], []
    for i, (img, mask) in enumerate(zip(images, masks)):
        img = img.copy()
        if i >= 2:
            img[44:60, 30:50] = 220
        two_images.append(img)
        two.append(np.where(img == 220, 2, mask))
    fp2 = fingerprint_arrays(two_images, two, num_classes=3)
    assert fp2.intensity["foreground_median_sd"][0] == pytest.approx(sd, abs=1e-5)


def test_cpu_bf16_reads_the_cpu_flags(tmp_path):
    from zoo.recipe.apply import cpu_bf16

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 fma\n\n")
    assert cpu_bf16(info) == "avx512_bf16"
    info.write_text("flags\t\t: fpu amx_tile avx512_bf16 amx_bf16\n")
    assert cpu_bf16(info) == "amx_bf16"
    info.write_text("flags\t\t: fpu sse2 avx2 avx512f\nbugs\t\t: avx512_bf16\n")
    assert cpu_bf16(info) is None  # only the flags line counts
    assert cpu_bf16(tmp_path / "absent") is None


def test_plan_precision_follows_native_bf16(plain_fp):
    fast = plan_recipe(plain_fp, budget_s=180, cpu_bf16="avx512_bf16")
    assert fast.get("trainer.precision") == "mixed_bfloat16"
    assert "avx512_bf16" in fast.table()
    assert plan_recipe(plain_fp, budget_s=180).get("trainer.precision") == "float32"
    # Accelerators keep the configured precision; the user's choice wins.
    assert "trainer.precision" not in plan_recipe(plain_fp, device="gpu").overrides()
    mine = plan_recipe(plain_fp, cpu_bf16="amx_bf16", user_keys={"trainer.precision"})
    assert "trainer.precision" not in mine.overrides()


def test_plan_validated_weights_on_cpu(plain_fp, oriented_fp):
    # Fluorescence-like data (plain_fp): a moving average of the weights, running statistics.
    for budget in (60, 180, None):
        plan = plan_recipe(plain_fp, budget_s=budget)
        assert plan.get("trainer.ema_momentum") == 0.99
        assert "trainer.ema_momentum" in plan.overrides()
        assert "trainer.precise_bn_batches" not in plan.overrides()
    # Other data (oriented_fp: bright graded background): the plain weights, with batch-norm
    # statistics over about one pass of training batches, at most 16 batches.
    assert not oriented_fp.microscopy["likely"]
    many = _fp(num_train=1000, microscopy={**plain_fp.microscopy, "likely": False})
    for fp, budget in ((oriented_fp, 180), (many, 60)):
        plan = plan_recipe(fp, budget_s=budget)
        batch = plan.get("data.batch_size")
        assert plan.get("trainer.ema_momentum") is None
        want = min(-(-fp.num_train // batch), 16)
        assert plan.get("trainer.precise_bn_batches") == want
        assert want == (2 if fp is oriented_fp else 16)  # 16 images in batches of 8; capped
    # Accelerators keep the configured averaging (off by default); the user's value wins.
    for fp in (plain_fp, oriented_fp):
        gpu = plan_recipe(fp, device="gpu").overrides()
        assert "trainer.ema_momentum" not in gpu and "trainer.precise_bn_batches" not in gpu
    mine = plan_recipe(plain_fp, budget_s=180, user_keys={"trainer.ema_momentum"})
    assert "trainer.ema_momentum" not in mine.overrides()
    mine = plan_recipe(oriented_fp, budget_s=180, user_keys={"trainer.precise_bn_batches"})
    assert "trainer.precise_bn_batches" not in mine.overrides()


def test_plan_no_zoom_for_structures_spanning_the_image():
    # p90 extent 50 px of 64 (> half the side): anatomy-like layout, no zoom; 20 px of 64:
    # discrete objects, zoom from the spread p90 / p10 = 2 -> sqrt 2 = 1.41, capped at 1.4.
    extent = {"count": 40, "min": 8, "p10": 10, "median": 30, "p90": 50, "max": 60}
    r = plan_recipe(_fp(object_extent=extent), budget_s=180)
    assert r.get("data.augment.scale") == [1.0, 1.0]
    assert "span the image" in r.table()
    extent.update(p90=20)
    r = plan_recipe(_fp(object_extent=extent), budget_s=180)
    assert r.get("data.augment.scale") == [round(1 / 1.4**2, 2), 1.0]


def test_fingerprint_border_classes_and_storage():
    img = np.zeros((32, 32), np.uint16)
    img[:] = 100  # 16-bit file holding small values: uses 0.15% of the range
    mask = np.zeros((32, 32), np.int32)
    mask[0:4, 0:4] = 1  # touches the border
    mask[10:14, 10:14] = 2
    mask[20:30, 20:30] = 1
    fp = fingerprint_arrays([img] * 4, [mask] * 4, num_classes=3)
    assert fp.storage == "float" and fp.notes and "value range" in fp.notes[0]
    expected = [(1024 - 132) / 1024, 116 / 1024, 16 / 1024]
    assert fp.class_frequencies == pytest.approx(expected, abs=1e-6)  # stored with 6 decimals
    assert fp.objects_per_image["median"] == 3
    assert fp.border_object_fraction == pytest.approx(1 / 3, abs=1e-4)
    assert fp.border_image_fraction == 1.0
    assert fp.orientation["oriented"] is True  # corner object in every image: a fixed layout
    few = fingerprint_arrays([img] * 2, [mask] * 2, num_classes=3)
    assert few.orientation["oriented"] is None  # too few images to tell


def _write_folder(root: Path, images, masks) -> None:
    for split, idx in (("train", range(12)), ("val", range(12, 16))):
        for sub in ("images", "masks"):
            (root / split / sub).mkdir(parents=True, exist_ok=True)
        for i in idx:
            Image.fromarray(images[i]).save(root / split / "images" / f"{i:03d}.png")
            Image.fromarray((masks[i] * 255).astype(np.uint8)).save(
                root / split / "masks" / f"{i:03d}.png"
            )


def test_fingerprint_folder_reads_like_the_app_and_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "cache"))
    images, masks = squares_dataset()
    _write_folder(tmp_path / "data", images, masks)
    fp = fingerprint_folder(tmp_path / "data")
    assert fp.num_train == 12 and fp.num_val == 4 and fp.key
    assert fp.class_frequencies[1] == pytest.approx(400 / 4096, abs=1e-6)  # 0/255 -> 0/1
    assert fp.object_extent["median"] == 10
    cached = tmp_path / "cache" / "fingerprints" / f"{fp.key}.json"
    assert cached.exists()
    assert fingerprint_folder(tmp_path / "data").as_dict() == fp.as_dict()
    # Another file content (new size/mtime) is another key.
    Image.fromarray(images[0][:, ::-1]).save(tmp_path / "data" / "train" / "images" / "000.png")
    assert fingerprint_folder(tmp_path / "data").key != fp.key
    out = fp.save(tmp_path / "run" / "fingerprint.json")
    assert Fingerprint.from_dict(__import__("json").loads(out.read_text())) == fp


# --------------------------------------------------------------------------- planner


def test_plan_for_unoriented_fluorescence_squares(plain_fp):
    r = plan_recipe(plain_fp, budget_s=180, cores=2)
    assert r.get("data.image_size") == [64, 64] and r.get("data.resize") == "crop"
    # 131072 px / 4096 px = 32 -> capped at 16 (CPU) and at half of the 16 images.
    assert r.get("data.batch_size") == 8
    assert (
        r.get("data.augment.vflip") and r.get("data.augment.rot90") and r.get("data.augment.hflip")
    )
    assert r.get("data.augment.scale") == [round(1 / 1.05**2, 2), 1.0]  # equal sizes: min zoom
    assert r.get("data.augment.contrast") == 0.3
    assert r.get("data.augment.brightness") == float(f"{0.15 * plain_fp.intensity['p99_5'][0]:.3g}")
    assert r.get("loss") == "wbce+dice"
    # Foreground 400 / 4096 = 9.8% is not rare: plain BCE + Dice.
    assert "loss_options.wbce.pos_weight" not in r.overrides()
    # CPU: the original U-Net layout (VGG-13-BN, depth 4, full-resolution skip), decoder
    # blocks as wide as the stages they join (32, 64, 128, 256 at width 32: ~998 float32 steps
    # of 8 x 64x64 fit 3 minutes, test_cpu_width_follows_the_steps_that_fit).
    assert r.get("model.encoder") == "vgg13_bn"
    assert r.get("model.encoder_kwargs") == {"base_width": 32}
    assert r.get("model.decoder_channels") == [256, 128, 64, 32]
    assert r.get("model.full_resolution_skip") is True
    # Short CPU schedule: SGD with Nesterov momentum 0.99 at 1e-2 (nnU-Net's optimizer).
    opt = [r.get(f"trainer.{k}") for k in ("optimizer", "learning_rate", "momentum")]
    assert opt == ["sgd", 1e-2, 0.99]
    assert "model.pad_to_divisor" not in r.overrides()


@pytest.mark.parametrize(
    "short, user, steps, want",
    [
        (True, None, None, {"optimizer": "sgd", "learning_rate": 1e-2, "momentum": 0.99}),
        (True, None, 600, {"optimizer": "sgd", "learning_rate": 1e-2, "momentum": 0.99}),
        # Too few steps for momentum 0.99's ~100-step horizon: AdamW's short-schedule peak.
        (True, None, 599, {"optimizer": "adamw", "learning_rate": 2e-3}),
        (False, None, None, {"optimizer": "adamw", "learning_rate": 1e-3}),
        (False, None, 100, {"optimizer": "adamw", "learning_rate": 1e-3}),
        (True, "adam", None, {"learning_rate": 2e-3}),  # the user's optimizer: not chosen again
        (True, "sgd", 100, {"learning_rate": 1e-2, "momentum": 0.99}),  # kept, however few
        (False, "sgd", None, {"learning_rate": 1e-2, "momentum": 0.99}),
    ],
)
def test_planned_optimizer_and_its_learning_rate(short, user, steps, want):
    from zoo.recipe.optimizer import plan_optimizer

    got = {}

    def choose(key, value, why):
        got[key.split(".")[1]] = value

    plan_optimizer(choose, short, user, steps)
    assert got == want


@pytest.mark.parametrize(
    "budget, bf16, cores, width",
    [(47, "avx512_bf16", 2, 16), (49, "avx512_bf16", 2, 32), (70, None, 2, 16),
     (74, None, 2, 32), (37, None, 4, 32), (35, None, 4, 16), (None, None, 2, 16)],
)  # fmt: skip
def test_cpu_width_follows_the_steps_that_fit(plain_fp, budget, bf16, cores, width):
    # 8 x 64x64 = 32768 px per step; width 32 costs 3.3 us per pixel in bfloat16 on 2 cores:
    # 0.1081 s per step, x1.5 in float32 (0.1622 s), x2/4 on 4 cores (0.0811 s). Width 32 when
    # 400 steps fit in 90% of the budget: from 48.1 s (bfloat16), 72.1 s (float32), 36.0 s
    # (float32, 4 cores). Without a budget: 16 x 64x64 = 0.066 Mpx is little data.
    r = plan_recipe(plain_fp, budget_s=budget, cores=cores, cpu_bf16=bf16)
    assert r.get("data.batch_size") == 8
    assert r.get("model.encoder_kwargs") == {"base_width": width}
    assert r.get("model.decoder_channels") == [width * 2**k for k in (3, 2, 1, 0)]
    reason = {c.key: c.reason for c in r.choices}["model.encoder_kwargs"]
    if budget is None:
        assert reason.startswith("little data (0.066 Mpx)")
    else:
        step = 32768 * 3.3e-6 * (1 if bf16 else 1.5) * 2 / cores
        assert reason.startswith(f"~{int(0.9 * budget / step)} steps of width 32")


@pytest.mark.parametrize("budget, width", [(500, 16), (501, 32)])
def test_cpu_width_waits_until_the_narrow_net_has_seen_the_data(plain_fp, budget, width):
    # 200 images of 64x64, batch 16 (the CPU cap): a step sees 16 / 200 = 0.08 of them. Width
    # 16 steps cost 65536 px x 1.1 us = 0.0721 s (bfloat16, 2 cores): 90% of 500 s holds 6242
    # of them, 499.4 passes (< 500: width 16, though ~2080 width-32 steps fit); 501 s holds
    # 6254, 500.3 passes.
    many = Fingerprint.from_dict({**plain_fp.as_dict(), "num_train": 200})
    r = plan_recipe(many, budget_s=budget, cores=2, cpu_bf16="avx512_bf16")
    assert r.get("data.batch_size") == 16
    assert r.get("model.encoder_kwargs") == {"base_width": width}
    reason = {c.key: c.reason for c in r.choices}["model.encoder_kwargs"]
    passes = int(int(0.9 * budget / (65536 * 1.1e-6)) * 0.08)
    assert passes == (499 if budget == 500 else 500)
    if width == 16:
        assert reason.startswith("~6242 steps of width 16 fit 500 s, ~499 passes over the")
    else:
        assert reason.startswith("~2084 steps of width 32 fit 501 s (>= 400); width 16 would")
        assert "pass ~500 times" in reason


def test_plan_for_oriented_data_keeps_orientation(oriented_fp):
    r = plan_recipe(oriented_fp, budget_s=600)
    assert r.get("data.augment.vflip") is False and r.get("data.augment.rot90") is False
    assert r.get("data.augment.hflip") is True
    # Not fluorescence-like: jitter 2x the measured spread of the squares' brightness (none
    # under 3%).
    rel = oriented_fp.intensity["foreground_median_sd"][0] / oriented_fp.intensity["p99_5"][0]
    assert r.get("data.augment.contrast") == (round(min(2 * rel, 0.1), 3) if rel >= 0.03 else 0)
    assert r.get("model.encoder_kwargs") == {"base_width": 32}  # 10 minutes of 64x64 batches


def test_plan_tta_follows_the_flips_trained_with(plain_fp, oriented_fp):
    from zoo.recipe.tta import plan_tta

    assert [plan_tta(h, v)[0] for h, v in [(1, 1), (1, 0), (0, 1), (0, 0)]] == [
        "flip", "hflip", "none", "none"
    ]  # fmt: skip
    # No orientation: every flip trained, so the 4 flipped views; the final Dice is scored
    # on the whole files with them (as predictions get it).
    r = plan_recipe(plain_fp, budget_s=180)
    assert r.get("predict.tta") == "flip" and r.get("trainer.final_eval") == "full_resolution"
    # Up-down orientation kept, left-right flips on: the image and its mirror.
    r = plan_recipe(oriented_fp, budget_s=180)
    assert r.get("predict.tta") == "hflip" and r.get("trainer.final_eval") == "full_resolution"
    # The command line's flips decide (data.augment.hflip=false: no view is averaged, and
    # the final evaluation stays the config's).
    r = plan_recipe(oriented_fp, budget_s=180, user_keys={"data.augment.hflip"},
                    flips={"hflip": False})  # fmt: skip
    assert r.get("predict.tta") == "none" and "trainer.final_eval" not in r.overrides()
    r = plan_recipe(
        plain_fp, budget_s=180, user_keys={"data.augment.vflip"}, flips={"vflip": False}
    )
    assert r.get("predict.tta") == "hflip"


def _fp(**changes) -> Fingerprint:
    base = fingerprint_arrays(*squares_dataset(n=4)).as_dict()
    base.update(changes)
    return Fingerprint.from_dict(base)


def test_plan_sizes_for_large_and_odd_images():
    big = _fp(
        image_size_min=[1024, 1024], image_size_median=[1024, 1024], image_size_max=[1024, 1024],
        object_extent={"count": 50, "min": 20, "p10": 20, "median": 30, "p90": 40, "max": 60},
        num_train=200,
    )  # fmt: skip
    r = plan_recipe(big, budget_s=3600)
    # VGG U-Net: depth 4 (divisor 16); 4 x 40 = 160 px crops at native resolution.
    assert r.get("data.image_size") == [160, 160] and r.get("data.resize") == "crop"
    # Batch 4 (128k px / 160^2 = 5.1 -> 4). A pass is every image's pixels: 200 x 1024^2 px
    # against 4 x 160^2 px a step, 0.000488 of them; 90% of an hour holds 3240 s / (102400 px
    # x 1.1 us x 1.5 float32) = 19176 width-16 steps, 9 passes (< 500): width 16, though
    # ~6392 width-32 steps fit.
    assert r.get("data.batch_size") == 4
    assert r.get("model.encoder_kwargs") == {"base_width": 16}
    reason = {c.key: c.reason for c in r.choices}["model.encoder_kwargs"]
    assert reason.startswith("~19176 steps of width 16 fit 3600 s, ~9 passes over the")
    chans = r.get("model.decoder_channels")
    assert chans == [128, 64, 32, 16] and all(type(c) is int for c in chans)
    assert (r.get("trainer.optimizer"), r.get("trainer.learning_rate")) == ("adamw", 1e-3)
    assert "trainer.momentum" not in r.overrides()
    # A minute holds 54 s / 0.16896 s = 319 width-16 steps (< 600): AdamW at 2e-3, not SGD;
    # three minutes hold 958: SGD.
    r = plan_recipe(big, budget_s=60)
    assert (r.get("trainer.optimizer"), r.get("trainer.learning_rate")) == ("adamw", 2e-3)
    reason = {c.key: c.reason for c in r.choices}["trainer.optimizer"]
    assert reason.startswith("short CPU schedule of ~319 steps (< 600)")
    assert plan_recipe(big, budget_s=180).get("trainer.optimizer") == "sgd"
    odd = _fp(image_size_min=[100, 100], image_size_median=[100, 100], image_size_max=[100, 100])
    r = plan_recipe(odd, budget_s=60)
    assert r.get("data.image_size") == [100, 100] and r.get("model.pad_to_divisor") is True
    gpu = plan_recipe(big, device="gpu")
    assert gpu.get("model.encoder") == "resnet34" and gpu.get("trainer.max_steps") >= 1000


def _sized(fp: Fingerprint, h: int, w: int, **kw: object) -> Fingerprint:
    """`fp` with all its images `h` x `w` (and other fields from `kw`)."""
    size = {"image_size_min": [h, w], "image_size_median": [h, w], "image_size_max": [h, w]}
    return Fingerprint.from_dict({**fp.as_dict(), **size, **kw})


def test_batch_counts_the_crops_of_images_larger_than_the_window():
    # 6 images of 900x1200 with objects up to 23 px: 128 px crops at native resolution, each
    # image holds 7 x 9 = 63 of them, 378 in all. The batch is the pixel target's 8 (128k px /
    # 128^2), not half of the 6 images (3); the data pipeline draws 2 crops per image and pass.
    extent = {"count": 500, "min": 6, "p10": 9, "median": 15, "p90": 23, "max": 30}
    few = _sized(_fp(object_extent=extent, num_train=6), 900, 1200)
    r = plan_recipe(few, budget_s=60, cpu_bf16="avx512_bf16")
    assert r.get("data.image_size") == [128, 128] and r.get("data.resample") == 1.0
    assert r.get("data.batch_size") == 8
    # Tiles the window holds whole keep the cap at half of the images (6: 3).
    assert plan_recipe(_sized(few, 128, 128), budget_s=60).get("data.batch_size") == 3
    # 2 images of 300x300 hold 2 x 2 x 2 = 8 windows of 128: at most 4 a batch, and the
    # reason says why.
    r = plan_recipe(_sized(few, 300, 300, num_train=2), budget_s=60)
    assert r.get("data.batch_size") == 4
    reason = {c.key: c.reason for c in r.choices}["data.batch_size"]
    assert reason.endswith("at most half of the 8 crops that the 2 images hold")
    # Precise batch-norm statistics (data that is not fluorescence-like) over about one pass
    # of the crops: 378 crops in batches of 8 -> 48 batches, capped at 16.
    dim = _sized(few, 900, 1200, microscopy={**few.microscopy, "likely": False})
    r = plan_recipe(dim, budget_s=60)
    assert r.get("trainer.precise_bn_batches") == 16
    assert "(~128 crops)" in {c.key: c.reason for c in r.choices}["trainer.precise_bn_batches"]
    r = plan_recipe(_sized(dim, 300, 300, num_train=2), budget_s=60)
    assert r.get("trainer.precise_bn_batches") == 2  # 8 crops in batches of 4


def test_a_few_small_images_do_not_set_the_crop_for_all():
    # The smallest short side, leaving out images under 3/4 of the 10th percentile: 19 images
    # of 64x80 and one of 32x40 -> 64 (32 < 48 is an outlier); one of 56x70 instead -> 56
    # (not an outlier); two of 32x40 (10% of 20: the percentile is theirs) -> 32.
    images, masks = squares_dataset(n=20)
    wide = [np.pad(i, ((0, 0), (0, 16))) for i in images]
    wide_masks = [np.pad(m, ((0, 0), (0, 16))) for m in masks]

    def floor(*hw):
        small = [(i[:h, :w], m[:h, :w]) for (h, w), i, m in zip(hw, images, masks)]
        ims = [s[0] for s in small] + wide[len(hw) :]
        return fingerprint_arrays(ims, [s[1] for s in small] + wide_masks[len(hw) :])

    fp = floor((32, 40))
    assert fp.image_size_min == [32, 40] and fp.short_side_floor == 64
    assert floor((56, 70)).short_side_floor == 56
    assert floor((32, 40), (32, 40)).short_side_floor == 32
    # 40 photos of 300x400 with objects up to 60 px and one thumbnail of 100x130: the window
    # for 4x the objects is 240 px (native resolution, it fits 256), and the images but the
    # thumbnail are 300 px high, so the crop is 240 px.
    extent = {"count": 80, "min": 20, "p10": 30, "median": 45, "p90": 60, "max": 70}
    photos = _fp(
        image_size_min=[100, 130], image_size_median=[300, 400], image_size_max=[300, 400],
        short_side_floor=300, same_size=False, object_extent=extent, num_train=41,
    )  # fmt: skip
    r = plan_recipe(photos, budget_s=60)
    assert r.get("data.resample") == 1.0 and r.get("data.image_size") == [240, 240]
    reason = {c.key: c.reason for c in r.choices}["data.image_size"]
    assert reason.endswith(
        "holds 4x the large objects (p90 60 px); images far smaller than the rest, down to "
        "100 px, are enlarged to it"
    )
    # Measured against the smallest image (a fingerprint without the floor, cached
    # before it), the thumbnail would make the 60 px objects look like structures spanning
    # the images (over half of 100 px): every image shrunk 0.64x and cropped to 64 px.
    older = Fingerprint.from_dict({**photos.as_dict(), "short_side_floor": 0})
    r = plan_recipe(older, budget_s=60)
    assert r.get("data.resample") == 0.64 and r.get("data.image_size") == [64, 64]


def test_photos_of_many_megapixels_take_gray_statistics_from_a_grid():
    from zoo.recipe.stats import GRAY_GRID_PIXELS, per_image

    # 2101 x 2101 px (4.4 Mpx > 4 Mpx: every 2nd row and column) of gray level 50 with a
    # 301 x 301 square of 200. Pixel counts and objects stay exact; the gray levels are the
    # grid's, here the same as the whole image's.
    assert 2101**2 > GRAY_GRID_PIXELS > (2101 // 2 + 1) ** 2
    image = np.full((2101, 2101), 50, np.uint8)
    mask = np.zeros((2101, 2101), np.int32)
    image[900:1201, 700:1001] = 200
    mask[900:1201, 700:1001] = 1
    st = per_image(image, mask, None, 1, None, np.random.default_rng(0))
    assert st["counts"].tolist() == [2101**2 - 301**2, 301**2]
    assert st["extents"] == [301] and st["border_objects"] == 0
    assert st["fg_levels"] == [pytest.approx(200 / 255)] and st["bg_above_fg"] == 0.0
    grid = (image[::2, ::2] == 50).mean()  # the grid's share of background pixels
    assert st["dark_fraction"] == pytest.approx(grid) and abs(grid - 0.9795) < 1e-3
    # The same scene at a quarter of the size (under the limit, used whole) agrees.
    small = per_image(image[::2, ::2], mask[::2, ::2], None, 1, None, np.random.default_rng(0))
    assert small["dark_fraction"] == st["dark_fraction"]
    np.testing.assert_allclose(small["thumb"], st["thumb"], atol=1e-6)


def test_instance_ids_of_any_size_are_objects():
    # Instance ids need not be small or consecutive (some tools write hashes): a 10x10 object
    # of id 3e9 and a 20x10 one of id 7 are two objects of extents 10 and 20.
    mask = np.zeros((64, 64), np.int64)
    inst = np.zeros((64, 64), np.int64)
    mask[5:15, 5:15], inst[5:15, 5:15] = 1, 3_000_000_000
    mask[30:50, 30:40], inst[30:50, 30:40] = 1, 7
    fp = fingerprint_arrays([np.zeros((64, 64), np.uint8)], [mask], instances=[inst])
    e, d = fp.object_extent, fp.object_diameter
    assert (e["count"], e["min"], e["max"]) == (2, 10, 20)
    assert d["max"] == pytest.approx(2 * math.sqrt(200 / math.pi), abs=1e-3)


def test_plan_multiclass_weights():
    fp = _fp(num_classes=3, class_frequencies=[0.81, 0.18, 0.01])
    r = plan_recipe(fp, budget_s=180)
    raw = [1 / math.sqrt(q) for q in (0.81, 0.18, 0.01)]
    mean = sum(raw) / 3
    assert r.get("loss") == "wce+dice"
    assert r.get("loss_options.wce.class_weights") == [round(x / mean, 3) for x in raw]
    assert r.get("loss_options.dice.classes") == [1, 2]  # background (class 0) left out
    import losses

    losses.get("wce", class_weights=r.get("loss_options.wce.class_weights"))
    losses.get("dice", mode="multiclass", classes=r.get("loss_options.dice.classes"))
    # No class under 5% of the pixels: plain CE (as for a binary foreground that is not rare).
    even = plan_recipe(_fp(num_classes=3, class_frequencies=[0.75, 0.16, 0.09]), budget_s=180)
    assert "loss_options.wce.class_weights" not in even.overrides()
    assert "9.0% of pixels, not rare" in even.table()
    assert even.get("loss_options.dice.classes") == [1, 2]
    # The best checkpoint follows the same classes as the Dice loss.
    assert even.get("data.background_class") == 0
    assert "data.background_class" not in plan_recipe(_fp(), budget_s=180).overrides()  # binary
    # The user's background: Dice over the other classes, the key left as the user set it.
    theirs = plan_recipe(
        _fp(num_classes=3, class_frequencies=[0.2, 0.3, 0.5]), budget_s=180,
        user_keys={"data.background_class"}, background=2,
    )  # fmt: skip
    assert theirs.get("loss_options.dice.classes") == [0, 1]
    assert "data.background_class" not in theirs.overrides()


def test_user_overrides_win_and_args_parse(plain_fp):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    argv = ["data.batch_size=4", "model=unet", "+loss_options.wbce.pos_weight=3", "seed=1"]
    keys = user_keys_from_overrides(argv)
    assert keys == {"data.batch_size", "loss_options.wbce.pos_weight", "seed"}
    r = plan_recipe(plain_fp, budget_s=180, user_keys=keys | {"data.augment"})
    over = r.overrides()
    assert "data.batch_size" not in over and "loss_options.wbce.pos_weight" not in over
    assert not any(k.startswith("data.augment") for k in over)
    assert "model.encoder" in over  # a group choice does not pin the model's values
    assert "set on the command line" in r.table() and "data.batch_size" in r.table()
    args = r.hydra_args()
    assert "++model.encoder_kwargs={base_width:32}" in args
    parsed = OverridesParser.create().parse_overrides(args)
    assert {o.key_or_group for o in parsed} == set(over)
    for o in parsed:  # the parsed values are the planned ones
        assert o.value() == over[o.key_or_group]


def test_planned_data_values_pass_the_data_schema(plain_fp, oriented_fp):
    from zoo.data.config import parse_data_config

    for fp in (plain_fp, oriented_fp):
        data = {"name": "folder", "root": "/x", "augment": {}}
        for key, value in plan_recipe(fp, budget_s=60).overrides().items():
            if key.startswith("data.augment."):
                data["augment"][key.rsplit(".", 1)[1]] = value
            elif key.startswith("data."):
                data[key[5:]] = value
        parsed = parse_data_config(data)
        assert parsed.image_size == [64, 64] and parsed.resize == "crop"


def test_consistent_but_tiny_asymmetry_does_not_forbid_flips():
    # The same left-right symmetric disk in every image plus the same faint left-to-right ramp
    # (3 grey levels against a disk of 150): a perfectly consistent asymmetry (huge t) of
    # negligible size, like data a pixel off-centre. A strong ramp is a real orientation.
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64]
    disk = ((yy - 31.5) ** 2 + (xx - 31.5) ** 2 <= 400).astype(np.int32)

    def images(amplitude: float) -> list[np.ndarray]:
        ramp = np.linspace(0, amplitude, 64)[None, :]
        return [
            np.clip(20 + 150 * disk + ramp + rng.normal(0, 2, (64, 64)), 0, 255).astype(np.uint8)
            for _ in range(16)
        ]

    o = fingerprint_arrays(images(3), [disk] * 16).orientation
    assert o["horizontal"] >= 2.5 and o["horizontal_size"] < 0.1  # detected ...
    assert o["left_right"] is False and o["oriented"] is False  # ... and ignored
    o = fingerprint_arrays(images(100), [disk] * 16).orientation
    assert o["horizontal_size"] >= 0.1 and o["left_right"] is True


# --------------------------------------------------------------------------- schedule


def test_budget_cosine_schedule_length_set_after_building():
    import keras

    from zoo.recipe.schedule import BudgetCosineDecay

    lr = BudgetCosineDecay(1e-3, total_steps=1000, warmup_steps=10, alpha=0.1)
    opt = keras.optimizers.Adam(learning_rate=lr)  # built before the plan exists
    assert float(lr(5)) == pytest.approx(0.5e-3)  # the ramp does not depend on the length
    lr.set_length(110, 10)  # the plan: 110 steps
    assert float(lr(10)) == pytest.approx(1e-3)
    # Half-way through the decay: alpha + (1 - alpha) / 2 of the peak.
    assert float(lr(60)) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5), rel=1e-5)
    assert float(lr(85)) == pytest.approx(
        1e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(0.75 * math.pi))), rel=1e-5
    )
    assert float(lr(500)) == pytest.approx(1e-4)
    opt.iterations.assign(60)
    assert float(opt.learning_rate) == pytest.approx(float(lr(60)))
    clone = BudgetCosineDecay.from_config(lr.get_config())
    assert (clone.total_steps, clone.warmup_steps, clone.alpha) == (110, 10, 0.1)
    with pytest.raises(ValueError, match="total_steps"):
        lr.set_length(0)


# --------------------------------------------------------------------------- recipe=auto in the app


def compose(overrides):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from zoo.config import register_configs

    register_configs()
    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(version_base="1.3", config_dir=str(conf)):
        return hydra_compose(config_name="config", overrides=overrides)


def test_recipe_auto_applies_the_plan_except_command_line_keys(tmp_path, monkeypatch):
    import json

    from zoo.config import validate
    from zoo.recipe.apply import apply_recipe, cpu_bf16

    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "cache"))
    _write_folder(tmp_path / "data", *squares_dataset())
    base = ["recipe=auto", "data=folder", f"data.root={tmp_path / 'data'}"]
    user = ["data.batch_size=4", "trainer.time_budget=3m"]
    cfg = compose(base + user)
    explicit = user_keys_from_overrides(user)
    planned, outcome = apply_recipe(cfg, explicit=explicit, run_dir=tmp_path / "run")
    applied = outcome.applied
    run = validate(planned, explicit)
    assert run.data.batch_size == 4 and "data.batch_size" not in applied  # the user's value
    # The plan for 12 fluorescence-like 64x64 tiles with 10 px objects and no orientation.
    assert (run.data.image_size, run.data.resize) == ([64, 64], "crop")
    assert run.data.augment.vflip and run.data.augment.rot90 and run.data.augment.contrast == 0.3
    assert (run.predict.tta, run.trainer.final_eval) == ("flip", "full_resolution")
    assert run.model.kwargs["encoder"] == "vgg13_bn"
    # Width 32: even in float32 on one core ~666 steps of 6 x 64x64 fit 3 minutes.
    assert run.model.kwargs["encoder_kwargs"] == {"base_width": 32}
    assert run.model.kwargs["decoder_channels"] == [256, 128, 64, 32]
    assert run.model.kwargs["full_resolution_skip"] is True
    assert "pos_weight" not in run.loss.options.get("wbce", {})  # 9.8% foreground: unweighted
    assert (run.trainer.optimizer, run.trainer.learning_rate) == ("sgd", 1e-2)
    assert run.trainer.momentum == 0.99 and run.trainer.time_budget == "3m"
    assert run.trainer.max_steps is None  # the budget decides the steps
    native = cpu_bf16() is not None  # this machine's CPU decides the precision
    assert run.trainer.precision == ("mixed_bfloat16" if native else "float32")
    assert cfg.data.image_size is None  # the composed config itself is not changed
    fp = json.loads((tmp_path / "run" / "fingerprint.json").read_text())
    assert fp["num_train"] == 12 and fp["object_extent"]["median"] == 10
    table = json.loads((tmp_path / "run" / "recipe.json").read_text())["table"]
    assert "data.batch_size" in table and "set on the command line" in table

    # Without a budget the plan sets max_steps: 12 images / batch 6 = 2 steps a pass, 250
    # passes = 500, at least 1000. With epochs given (here or in a config) it does not.
    planned, outcome = apply_recipe(compose(base), explicit=set())
    assert outcome.applied["trainer.max_steps"] == 1000 and outcome.applied["data.batch_size"] == 6
    planned, outcome = apply_recipe(compose(base + ["trainer.epochs=2"]), explicit=set())
    assert "trainer.max_steps" not in outcome.applied and planned.trainer.epochs == 2
    # A flip turned off on the command line: the TTA follows (up-down flips alone: none).
    planned, outcome = apply_recipe(
        compose(base + ["data.augment.hflip=false"]), explicit={"data.augment.hflip"}
    )
    assert planned.predict.tta == "none" and "predict.tta" in outcome.applied
    # The command line's optimizer is kept and gets its own learning rate: AdamW on a short
    # CPU schedule 2e-3, not the 1e-2 planned for SGD.
    user = ["trainer.optimizer=adamw", "trainer.time_budget=3m"]
    planned, outcome = apply_recipe(compose(base + user), explicit=user_keys_from_overrides(user))
    assert (planned.trainer.optimizer, planned.trainer.learning_rate) == ("adamw", 2e-3)
    assert "trainer.optimizer" not in outcome.applied and "trainer.momentum" not in outcome.applied


@pytest.mark.parametrize("precision, width", [(None, 32), ("float32", 16), ("mixed_bfloat16", 32)])
def test_recipe_auto_estimates_steps_at_the_typed_precision(
    tmp_path, monkeypatch, precision, width
):
    # A bfloat16 CPU, 2 cores, 45 s. 12 tiles of 64x64, batch 6 = 24576 px a step. Width 32:
    # 24576 x 3.3 us = 0.0811 s in bfloat16, 0.1217 s in float32; 90% of 45 s holds 499 of
    # the first (>= 400: width 32) and 332 of the second (< 400: width 16). A typed float32
    # runs float32 steps, so the plan counts those.
    from zoo.recipe import apply

    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(apply, "cpu_bf16", lambda: "avx512_bf16")
    monkeypatch.setattr(apply, "cpu_cores", lambda: 2)
    _write_folder(tmp_path / "data", *squares_dataset())
    user = ["trainer.time_budget=45s"] + ([f"trainer.precision={precision}"] if precision else [])
    # The fixed costs (no speed probe): the estimate follows the precision alone.
    base = ["recipe=auto", "recipe.device=cpu", "recipe.cpu_probe=false", "data=folder"]
    base.append(f"data.root={tmp_path / 'data'}")
    planned, outcome = apply.apply_recipe(
        compose(base + user), explicit=user_keys_from_overrides(user)
    )
    assert planned.data.batch_size == 6
    assert planned.model.encoder_kwargs == {"base_width": width}
    assert planned.trainer.precision == (precision or "mixed_bfloat16")
    wide = int(0.9 * 45 / (24576 * 3.3e-6 * (1.5 if precision == "float32" else 1)))
    assert f"~{wide} steps of width 32" in outcome.recipe.table()


def test_recipe_auto_pads_for_another_models_divisor_and_skips_other_data(tmp_path, monkeypatch):
    from zoo.config import validate
    from zoo.recipe.apply import apply_recipe

    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "cache"))
    images, masks = squares_dataset()
    _write_folder(tmp_path / "data", [i[:48, :48] for i in images], [m[:48, :48] for m in masks])
    # 48 px tiles: native size; FPN needs multiples of 32, so the model pads.
    cfg = compose(["recipe=auto", "model=fpn", "data=folder", f"data.root={tmp_path / 'data'}"])
    planned, outcome = apply_recipe(cfg, explicit=set())
    applied = outcome.applied
    assert applied["data.image_size"] == [48, 48] and applied["model.pad_to_divisor"] is True
    assert "model.encoder" not in applied  # only U-Net gets planned widths
    validate(planned)
    # Other data: nothing planned, the log says why.
    cfg = compose(["recipe=auto"])
    same, outcome = apply_recipe(cfg, explicit=set())
    assert same is cfg and outcome.applied == {}
    assert "data=shapes keeps its own config" in outcome.note


# --------------------------------------------------------------------------- resolution


def test_structure_width_of_known_bands_and_squares(plain_fp):
    # Full-width bands 5 px high: the ridge is each band's middle row, 3 px from the
    # background -> 2 * 3 - 1 = 5 px everywhere. A 10 px square's ridge is its middle 2x2,
    # 5 px from the background -> 9 (even widths read 1 less).
    mask = np.zeros((64, 64), np.int32)
    for top in (10, 30, 50):
        mask[top : top + 5] = 1
    image = (20 + 200 * mask).astype(np.uint8)
    fp = fingerprint_arrays([image] * 4, [mask] * 4)
    assert fp.structure_width["count"] == 4 * 3 * 64
    assert all(fp.structure_width[k] == 5 for k in ("p10", "p25", "median", "p90"))
    assert plain_fp.structure_width["p10"] == plain_fp.structure_width["p90"] == 9
    # A 1200 px mask is measured in one 512 px window: still 5 px everywhere, fewer values.
    from zoo.recipe.stats import ridge_widths

    big = np.zeros((1200, 1200), bool)
    for top in range(20, 1200, 40):
        big[top : top + 5] = True
    widths = ridge_widths(big, np.random.default_rng(0), limit=10**6)
    assert set(widths.tolist()) == {5.0} and len(widths) <= 13 * 512


def _large(p90=200.0, side=(1024, 1024), width=20.0):
    return _fp(
        image_size_min=list(side), image_size_median=list(side), image_size_max=list(side),
        object_extent={"count": 50, "min": 20, "p10": 40, "median": 100, "p90": p90,
                       "max": 300},
        structure_width={"count": 500, "p10": width, "p25": width, "median": 30, "p90": 60},
        num_train=40,
    )  # fmt: skip


def test_plan_shrinks_large_images_until_the_window_holds_the_objects():
    from zoo.recipe.resolution import plan_resample

    # 1024 px images, objects up to 200 px: a window of 4 x 200 = 800 px would be needed;
    # the CPU window is 256 -> 256 / 800 = 0.32 (thin parts 20 px -> 6.4 px: allowed).
    r = plan_recipe(_large(), budget_s=180)
    assert r.get("data.resample") == 0.32
    # At 0.32x: 328 px images, objects 64 px -> 4 x 64 = 256 px crops.
    assert r.get("data.image_size") == [256, 256] and r.get("data.resize") == "crop"
    # Thin parts 5 px: shrinking stops at 3 / 5 = 0.6 (the reason says so); crops of
    # 4 x 120 px capped at 256.
    r = plan_recipe(_large(width=5.0), budget_s=180)
    assert r.get("data.resample") == 0.6 and r.get("data.image_size") == [256, 256]
    assert (
        "thin structures (p25 width 5 px)" in {c.key: c.reason for c in r.choices}["data.resample"]
    )
    # Thin parts 3 px: no shrinking at all; 4 px: 0.75 is kept, 3.2 px: 0.94 is not worth it.
    assert plan_resample(_large(width=3.0))[0] == 1.0
    assert plan_resample(_large(width=4.0))[0] == 0.75
    assert plan_resample(_large(width=3.2))[0] == 1.0
    # Objects that a native window holds (4 x 40 = 160 px): native resolution.
    assert plan_resample(_large(p90=40.0))[0] == 1.0
    # A GPU window (512 px) needs less shrinking: 512 / 800 = 0.64.
    assert plan_resample(_large(), device="gpu")[0] == 0.64
    # data.resize on the command line (resize mode takes no resample): not planned.
    r = plan_recipe(_large(), budget_s=180, user_keys={"data.resize"})
    assert r.get("data.resample") == 1.0 and "trainer.final_eval" not in r.overrides()
    # data.resample on the command line: the crops are planned at the user's scale (0.5x:
    # 512 px images, objects 100 px -> 4 x 100 = 400 px capped at 256).
    r = plan_recipe(_large(), budget_s=180, user_keys={"data.resample"}, resample=0.5)
    assert "data.resample" not in r.overrides() and r.get("data.image_size") == [256, 256]
    r = plan_recipe(_large(p90=40.0), budget_s=180, user_keys={"data.resample"}, resample=0.5)
    # objects 20 px at 0.5x: 4 x 20 = 80 px, raised to the 128 px minimum (160 px at 1x).
    assert r.get("data.image_size") == [128, 128]


def test_plan_shrinks_images_whose_structures_span_them_to_the_window():
    from zoo.recipe.resolution import plan_resample

    # 600 x 450 photos of one object up to 400 px (> half of 450: spanning): a whole image
    # in the 256 px window -> 256 / 600 = 0.4267, rounded down to 0.42 so that it fits:
    # 252 x 189 px, trained whole (padded inside the model to the divisor 16).
    fp = _large(p90=400.0, side=(600, 450), width=100.0)
    factor, why = plan_resample(fp)
    assert factor == 0.42 and "a whole image" in why
    r = plan_recipe(fp, budget_s=180)
    assert r.get("data.image_size") == [252, 189] and r.get("model.pad_to_divisor") is True
    assert r.get("data.augment.scale") == [1.0, 1.0]
    # Thin parts that forbid a whole image: square crops, bounded by the short side. 96 x 1024
    # strips crossed by bands (p90 extent 96 px: spanning; p25 width 9 px, so at most 3 / 9 =
    # 0.34x, where 1024 px would need 0.25x): the short side fits the window at native
    # resolution, where shrinking would only lower it (it gave 32 px crops of 33 x 348 images).
    strips = _large(p90=96.0, side=(96, 1024), width=9.0)
    factor, why = plan_resample(strips)
    assert factor == 1.0 and "holds the images' short side" in why
    assert plan_recipe(strips, budget_s=60).get("data.image_size") == [96, 96]
    # ... and a short side above the window is shrunk to it: 600 x 2400, p25 width 4 px (at
    # most 0.75x, not the 0.11x a whole image needs): 256 / 600 = 0.4267 -> 0.75 by the floor;
    # with p25 width 2 px (no shrinking at all: 1.5 > 1) native.
    wide = _large(p90=500.0, side=(600, 2400), width=4.0)
    assert plan_resample(wide)[0] == 0.75
    assert plan_resample(_large(p90=500.0, side=(600, 2400), width=2.0))[0] == 1.0
    # p25 width 20 px (at most 0.15x; a whole image needs 0.107x): 256 / 600 -> 0.43.
    assert plan_resample(_large(p90=500.0, side=(600, 2400), width=20.0))[0] == 0.43
    # p25 width 30 px (0.1x allowed): the whole image fits at 256 / 2400 -> 0.10.
    factor, why = plan_resample(_large(p90=500.0, side=(600, 2400), width=30.0))
    assert factor == 0.1 and "a whole image" in why
    # Tiles that fit the window keep their resolution whatever their objects.
    tiles = _large(p90=100.0, side=(200, 200))
    assert plan_resample(tiles)[0] == 1.0
    assert plan_recipe(tiles, budget_s=180).get("data.resample") == 1.0


def test_recipe_auto_plans_the_size_at_the_command_lines_resample(tmp_path, monkeypatch):
    from zoo.config import validate
    from zoo.recipe.apply import apply_recipe

    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "cache"))
    _write_folder(tmp_path / "data", *squares_dataset())
    user = ["data.resample=0.5"]
    cfg = compose(["recipe=auto", "data=folder", f"data.root={tmp_path / 'data'}", *user])
    planned, outcome = apply_recipe(cfg, explicit=user_keys_from_overrides(user))
    # 64 px tiles at 0.5x: whole 32 px images (not the 64 px the stored size would give).
    assert outcome.applied["data.image_size"] == [32, 32]
    assert "data.resample" not in outcome.applied
    run = validate(planned, user_keys_from_overrides(user))
    assert run.data.resample == 0.5 and run.data.image_size == [32, 32]
