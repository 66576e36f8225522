"""recipe=auto's CPU speed probe (`zoo.recipe.probe`): its cache, and the plans it changes."""

from __future__ import annotations

import json
import math

import pytest
from test_recipe import _write_folder, compose, squares_dataset

from zoo.recipe import fingerprint_arrays, plan_recipe, user_keys_from_overrides
from zoo.recipe.probe import CACHE_NAME, REFERENCE_S, cpu_slowdown, probe_key, probe_seconds


def test_cpu_slowdown_is_the_probe_over_the_reference_measured_once(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    calls = []

    def fake(bf16):
        calls.append(bf16)
        return REFERENCE_S * (1.25 if bf16 else 2.5)

    assert cpu_slowdown(False, 2, measure=fake) == pytest.approx(2.5)
    assert cpu_slowdown(False, 2, measure=fake) == pytest.approx(2.5)
    assert calls == [False]  # the second run read the cache
    assert cpu_slowdown(True, 2, measure=fake) == pytest.approx(1.25)
    assert calls == [False, True]  # precision is part of the key
    saved = json.loads((tmp_path / CACHE_NAME).read_text())
    assert saved == {
        probe_key(False, 2): pytest.approx(REFERENCE_S * 2.5),
        probe_key(True, 2): pytest.approx(REFERENCE_S * 1.25),
    }
    # Other cores or oneDNN held to other kernels: another CPU as far as the plan goes.
    cpu_slowdown(False, 4, measure=fake)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    cpu_slowdown(False, 2, measure=fake)
    assert calls == [False, True, False, False] and "AVX2" in probe_key(False, 2)
    # Without the cache every call measures; a damaged cache is measured again and replaced.
    cpu_slowdown(False, 2, cache=False, measure=fake)
    assert len(calls) == 5
    (tmp_path / CACHE_NAME).write_text("{not json")
    assert cpu_slowdown(True, 2, measure=fake) == pytest.approx(1.25) and len(calls) == 6
    assert list(json.loads((tmp_path / CACHE_NAME).read_text())) == [probe_key(True, 2)]


def test_probe_times_real_convolutions_in_either_precision():
    for bf16 in (True, False):
        seconds = probe_seconds(bf16, repeats=2)
        assert math.isfinite(seconds) and 0 < seconds < 60
    assert "bfloat16" in probe_key(True, 2) and "float32" in probe_key(False, 2)


@pytest.fixture(scope="module")
def plain_fp():
    return fingerprint_arrays(*squares_dataset())


@pytest.mark.parametrize(
    "slowdown, width, optimizer", [(None, 32, "sgd"), (3.0, 16, "sgd"), (10.0, 16, "adamw")]
)
def test_plan_counts_the_measured_slowdown(plain_fp, slowdown, width, optimizer):
    # 16 tiles of 64x64, batch 8 = 32768 px a step; 120 s, bfloat16, 2 cores. Width 32 costs
    # 3.3 us a pixel (0.1081 s a step), width 16 1.1 us (0.0360 s), times the slowdown; 90% of
    # the budget trains. Unmeasured: 999 width-32 steps (>= 400, and width 16's 2996 steps
    # pass 1498 times over the tiles): width 32, SGD. 3x slower: 333 width-32 steps, width 16
    # with 998 of its steps (>= 600: SGD). 10x slower: 299 width-16 steps (< 600: AdamW).
    r = plan_recipe(plain_fp, budget_s=120, cores=2, cpu_bf16="avx512_bf16", cpu_slowdown=slowdown)
    assert r.get("data.batch_size") == 8
    assert r.get("model.encoder_kwargs") == {"base_width": width}
    assert r.get("trainer.optimizer") == optimizer
    wide = int(0.9 * 120 / (32768 * 3.3e-6 * (slowdown or 1)))
    reasons = {c.key: c.reason for c in r.choices}
    assert reasons["model.encoder_kwargs"].startswith(f"~{wide} steps of width 32")
    if optimizer == "adamw":
        narrow = int(0.9 * 120 / (32768 * 1.1e-6 * slowdown))
        assert narrow == 299 and f"~{narrow} steps (< 600)" in reasons["trainer.optimizer"]


def _apply(tmp_path, monkeypatch, extra, seconds, run_dir=None, cache=True):
    from zoo.recipe import apply, probe

    calls = []

    def fake(bf16):
        calls.append(bf16)
        return seconds

    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(apply, "cpu_bf16", lambda: "avx512_bf16")
    monkeypatch.setattr(apply, "cpu_cores", lambda: 2)
    monkeypatch.setattr(probe, "probe_seconds", fake)
    if not (tmp_path / "data").exists():
        _write_folder(tmp_path / "data", *squares_dataset())
    user = ["trainer.time_budget=45s", *extra]
    base = ["recipe=auto", "recipe.device=cpu", "data=folder", f"data.root={tmp_path / 'data'}"]
    cfg = compose(base + user)
    explicit = user_keys_from_overrides(user)
    planned, outcome = apply.apply_recipe(cfg, explicit=explicit, run_dir=run_dir, cache=cache)
    return planned, outcome, calls


def test_recipe_auto_plans_from_this_cpus_measured_speed(tmp_path, monkeypatch):
    # 12 tiles of 64x64, batch 6 = 24576 px a step, 45 s, a bfloat16 CPU. The reference
    # machine's costs fit 499 width-32 steps (width 32, test_recipe.py). A CPU that runs the
    # probe 4x as long fits 124 of them, and 374 of width 16 (24576 x 1.1 us x 4 = 0.108 s):
    # width 16, and AdamW (< 600 steps).
    planned, outcome, calls = _apply(tmp_path, monkeypatch, [], 4 * REFERENCE_S)
    assert calls == [True]  # timed once, in the planned precision
    assert planned.model.encoder_kwargs == {"base_width": 16}
    assert (planned.trainer.optimizer, planned.trainer.learning_rate) == ("adamw", 2e-3)
    table = outcome.recipe.table()
    assert "~124 steps of width 32" in table and "~374 steps (< 600)" in table
    assert "the speed probe 4.00x as long as the reference machine" in table
    # The same CPU again: the cached time plans alike, without timing.
    planned, outcome, calls = _apply(tmp_path, monkeypatch, [], 1.0)
    assert calls == [] and planned.model.encoder_kwargs == {"base_width": 16}
    # recipe.cpu_probe=false: the reference costs (width 32), nothing timed; a multi-worker
    # run (every worker must build the same model) does not time its CPU either.
    for extra in (["recipe.cpu_probe=false"], ["strategy=multi_worker"]):
        (tmp_path / "cache" / CACHE_NAME).unlink(missing_ok=True)
        planned, outcome, calls = _apply(tmp_path, monkeypatch, extra, 4 * REFERENCE_S)
        assert calls == [] and planned.model.encoder_kwargs == {"base_width": 32}, extra
        assert "speed probe" not in outcome.recipe.table()


def test_a_resumed_run_plans_with_the_factor_its_first_session_recorded(tmp_path, monkeypatch):
    # The first session times its CPU at 4x (width 16, as above) and records the factor in
    # recipe.json. Resumed where the probe would read 1x (another node, no cache), the plan
    # keeps 4x and so the same model; a fresh run directory times the CPU again (width 32).
    run = tmp_path / "run"
    planned, outcome, calls = _apply(tmp_path, monkeypatch, [], 4 * REFERENCE_S, run, False)
    assert calls == [True] and planned.model.encoder_kwargs == {"base_width": 16}
    recorded = json.loads((run / "recipe.json").read_text())
    assert recorded["cpu_slowdown"] == pytest.approx(4.0)
    planned, outcome, calls = _apply(tmp_path, monkeypatch, [], REFERENCE_S, run, False)
    assert calls == [] and planned.model.encoder_kwargs == {"base_width": 16}
    assert "as this run's recipe.json recorded it" in outcome.recipe.table()
    planned, outcome, calls = _apply(tmp_path, monkeypatch, [], REFERENCE_S, tmp_path / "new")
    assert calls == [True] and planned.model.encoder_kwargs == {"base_width": 32}
    # A recipe.json without a usable factor (an older run, a damaged file) is timed afresh.
    (run / "recipe.json").write_text(json.dumps({**recorded, "cpu_slowdown": None}))
    planned, outcome, calls = _apply(tmp_path, monkeypatch, [], REFERENCE_S, run, False)
    assert calls == [True] and planned.model.encoder_kwargs == {"base_width": 32}
