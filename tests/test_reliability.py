"""Fault tolerance and safety (docs/reliability.md).

Subprocess tests run `train.py` on a tiny U-Net through `tests/_fault_train.py`, which sends a
signal to the run at a chosen global step; the resumed run must end with every variable (model,
optimizer, metric accumulators) bitwise equal to an uninterrupted run. Fast in-process tests
cover the backup files, the NaN guard's ordering and safe loading.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from zoo.errors import BackupError, NonFiniteError
from zoo.outputs import all_finite
from zoo.saving import UnsafeModelError, load_model
from zoo.training import backup as reliability
from zoo.training.callbacks import NonFiniteGuard

ROOT = Path(__file__).resolve().parents[1]
# 4 steps per epoch, 2 epochs, ~200k parameters; deterministic=true is part of the promise.
TINY = [
    "data.image_size=[32,32]",
    "data.train_size=16",
    "data.val_size=8",
    "data.batch_size=4",
    "data.cache=false",
    "model.encoder=resnet18",
    "+model.encoder_kwargs.base_width=8",
    "model.decoder_channels=[16,8,8,8,8]",
    "trainer.epochs=2",
    "trainer.tensorboard=false",
    "trainer.num_overlays=0",
    "trainer.verbose=0",
    "deterministic=true",
    "seed=3",
]


def train(run_dir: Path, *extra: str, fault: str | None = None) -> subprocess.CompletedProcess:
    """train.py on the tiny config; `fault="KILL@7"` sends SIGKILL right after global step 7."""
    script = ["tests/_fault_train.py", fault] if fault else ["train.py"]
    return subprocess.run(
        [sys.executable, *script, *TINY, f"hydra.run.dir={run_dir}", *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


def ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stderr[-3000:]


def final_state(run_dir: Path) -> dict[str, np.ndarray]:
    """Every variable of the last backup (training model, optimizer, metrics) by name."""
    backup = reliability.read_backup(reliability.list_backups(run_dir / "backup")[0])
    return dict(zip(backup.meta["variables"], backup.arrays, strict=True)) | {
        "__step__": np.array(backup.step)
    }


def assert_same_run(a: Path, b: Path) -> None:
    sa, sb = final_state(a), final_state(b)
    assert sa.keys() == sb.keys()
    differ = [k for k in sa if not np.array_equal(sa[k], sb[k])]
    assert not differ, f"{len(differ)} variables differ, e.g. {differ[:5]}"
    wa = load_model(a / "model.keras").get_weights()
    wb = load_model(b / "model.keras").get_weights()
    assert all(np.array_equal(x, y) for x, y in zip(wa, wb, strict=True))
    assert (a / "train_log.csv").read_text() == (b / "train_log.csv").read_text()
    ha = json.loads((a / "metrics.json").read_text())["history"]
    assert ha == json.loads((b / "metrics.json").read_text())["history"]


def digests(run_dir: Path) -> dict[str, str]:
    return {
        str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file() and p.name != "train.log" and ".hydra" not in p.parts
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """One uninterrupted run, the ground truth of the resume tests."""
    run_dir = tmp_path_factory.mktemp("reference")
    ok(train(run_dir))
    return run_dir


# --- Resume -----------------------------------------------------------------------------------


def test_sigkill_mid_epoch_then_damaged_latest_backup_resumes_bitwise(reference, tmp_path):
    # Backups after every step; SIGKILL after step 7 (mid epoch 2) leaves steps 6 and 7.
    run_dir = tmp_path / "run"
    proc = train(run_dir, "trainer.backup_every_steps=1", fault="KILL@7")
    assert proc.returncode == -9
    assert [p.name for p in reliability.list_backups(run_dir / "backup")] == [
        "step-000000007.npz",
        "step-000000006.npz",
    ]
    assert not (run_dir / "model.keras").exists()
    # A half-written newest backup: the rerun must fall back to step 6 and say so.
    latest = run_dir / "backup" / "step-000000007.npz"
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])
    proc = train(run_dir, "trainer.backup_every_steps=1")
    ok(proc)
    logged = proc.stdout + proc.stderr  # Hydra logs to stdout
    assert "step-000000007.npz is damaged" in logged
    assert "Resuming from" in logged and "step-000000006.npz (step 6" in logged
    assert_same_run(reference, run_dir)


@pytest.mark.slow
def test_ctrl_c_leaves_backup_exits_130_and_resumes_bitwise(reference, tmp_path):
    run_dir = tmp_path / "run"
    proc = train(run_dir, fault="INT@5")
    assert proc.returncode == 130
    assert "Interrupted at step 5; backup" in proc.stderr
    assert "Traceback" not in proc.stderr
    # Epoch-end backup at step 4 plus the interrupt's own backup at step 5.
    names = [p.name for p in reliability.list_backups(run_dir / "backup")]
    assert names == ["step-000000005.npz", "step-000000004.npz"]
    ok(train(run_dir))
    assert_same_run(reference, run_dir)


@pytest.mark.slow
def test_two_fresh_processes_with_seed_and_deterministic_are_identical(reference, tmp_path):
    ok(train(tmp_path / "again"))
    assert_same_run(reference, tmp_path / "again")


def test_nan_stops_with_message_and_leaves_good_files_untouched(reference, tmp_path):
    # Continue the finished reference run for a third epoch with an absurd learning rate.
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    before = digests(run_dir)
    proc = train(run_dir, "trainer.epochs=3", "trainer.learning_rate=1e30")
    assert proc.returncode != 0
    assert "Training stopped at step" in proc.stderr and "nothing was saved" in proc.stderr
    assert digests(run_dir) == before  # no new backup, checkpoint, model, metrics or log row
    for path in reliability.list_backups(run_dir / "backup"):
        assert all_finite(reliability.read_backup(path).arrays)
    for path in (run_dir / "model.keras", run_dir / "checkpoints" / "best.keras"):
        assert all_finite(load_model(path).get_weights())


# --- Backup files (in-process) ----------------------------------------------------------------


def variables(value: float = 1.0) -> list[keras.Variable]:
    return [
        keras.Variable(np.full((2, 3), value, np.float32), name="w"),
        keras.Variable(np.array(7, np.int64), name="iterations"),
    ]


def test_backups_roundtrip_and_keep_the_newest_two(tmp_path):
    for step in (3, 1, 2, 4):
        reliability.write_backup(tmp_path, step, variables(step), {"history": {"loss": [0.5]}})
    # Written out of order on purpose: "newest" means the highest step.
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "step-000000003.npz",
        "step-000000004.npz",
    ]
    backup = reliability.load_latest(tmp_path)
    assert backup.step == 4 and backup.epochs_done == 1
    assert np.array_equal(backup.arrays[0], np.full((2, 3), 4.0, np.float32))
    assert backup.arrays[1] == 7


def test_damaged_backups_fall_back_then_fail_clearly(tmp_path, caplog):
    reliability.write_backup(tmp_path, 1, variables(1), {})
    reliability.write_backup(tmp_path, 2, variables(2), {})
    (tmp_path / "step-000000002.npz").write_bytes(b"PK\x03\x04 truncated")
    assert reliability.load_latest(tmp_path).step == 1
    assert "step-000000002.npz is damaged" in caplog.text
    (tmp_path / "step-000000001.npz").write_bytes(b"")
    with pytest.raises(BackupError, match="Every backup .* is damaged"):
        reliability.load_latest(tmp_path)
    assert reliability.load_latest(tmp_path / "missing") is None


def test_failed_or_non_finite_write_keeps_the_good_backup(tmp_path, monkeypatch):
    good = reliability.write_backup(tmp_path, 1, variables(1), {})
    digest = good.read_bytes()
    with pytest.raises(NonFiniteError, match="non-finite"):
        reliability.write_backup(tmp_path, 2, variables(np.nan), {})

    def crash(f, **arrays):  # dies half-way through writing
        f.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        reliability.write_backup(tmp_path, 3, variables(3), {})
    assert [p.name for p in tmp_path.iterdir()] == [good.name]  # no temp file left either
    assert good.read_bytes() == digest


def test_restore_refuses_a_backup_of_another_model(tmp_path):
    reliability.write_backup(tmp_path, 1, variables(), {})
    backup = reliability.load_latest(tmp_path)
    with pytest.raises(BackupError, match="another model config; pick a new hydra.run.dir"):
        reliability.restore_variables([keras.Variable(np.zeros((3, 3), np.float32))] * 2, backup)
    with pytest.raises(BackupError, match="holds 2 variables"):
        reliability.restore_variables(variables()[:1], backup)


def test_restored_dropout_and_optimizer_state_continue_identically(tmp_path):
    # Dropout draws from a Keras seed generator: its state must travel with the backup.
    def build() -> keras.Model:
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [
                keras.Input((4,)),
                keras.layers.Dense(8),
                keras.layers.Dropout(0.5),
                keras.layers.Dense(1),
            ]
        )
        model.compile(optimizer="adam", loss="mse")
        reliability.build_optimizer_state(model)
        return model

    x, y = np.random.default_rng(0).random((16, 4)), np.zeros((16, 1))
    fit = dict(batch_size=4, epochs=1, shuffle=False, verbose=0)
    model = build()
    model.fit(x, y, **fit)
    reliability.write_backup(tmp_path, 4, reliability.tracked_variables(model), {})
    model.fit(x, y, **fit)
    resumed = build()  # fresh weights, optimizer and seed-generator state
    resumed.fit(x, y, **{**fit, "epochs": 2})  # another state, to be overwritten by the backup
    reliability.restore_variables(
        reliability.tracked_variables(resumed), reliability.load_latest(tmp_path)
    )
    resumed.fit(x, y, **fit)
    assert int(resumed.optimizer.iterations) == 8
    for a, b in zip(model.get_weights(), resumed.get_weights(), strict=True):
        assert np.array_equal(a, b)


# --- NaN guard ordering (in-process) ----------------------------------------------------------


class Recorder(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def on_train_batch_end(self, batch, logs=None) -> None:
        self.batches.append(batch)


def test_guard_raises_before_later_callbacks_see_the_bad_batch():
    x = np.ones((8, 2), np.float32)
    x[5] = np.inf  # third batch of 2
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    recorder = Recorder()
    with pytest.raises(NonFiniteError, match="step 3"):
        model.fit(
            x,
            np.zeros((8, 1)),
            batch_size=2,
            shuffle=False,
            verbose=0,
            callbacks=[NonFiniteGuard(), recorder],
        )
    assert recorder.batches == [0, 1]


# --- Safe loading -----------------------------------------------------------------------------


def test_lambda_model_is_refused(tmp_path):
    inputs = keras.Input((4,))
    crafted = keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2)(inputs))
    path = tmp_path / "crafted.keras"
    crafted.save(path)
    with pytest.raises(UnsafeModelError, match="Lambda layer"):
        load_model(path)


def test_h5_is_not_offered(tmp_path):
    path = tmp_path / "model.h5"
    path.write_bytes(b"\x89HDF\r\n")
    with pytest.raises(ValueError, match="only .keras files"):
        load_model(path)


# --- Rerunning a run directory (correctness issue, items 8, 9, 11, 16) -------------------------


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


def test_finished_run_is_not_reexported_with_other_data(reference, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    before = digests(run_dir)
    line = one_error_line(train(run_dir, "data.val_size=4"))
    assert "holds a finished run trained with another config (data.val_size: 8 -> 4)" in line
    assert "pick a new hydra.run.dir" in line and "mode=evaluate" in line
    assert digests(run_dir) == before


def test_changed_model_on_a_resumed_run_ends_in_one_line(reference, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    before = digests(run_dir)
    proc = train(run_dir, "trainer.epochs=3", "model.decoder_channels=[16,8,8,8,4]")
    line = one_error_line(proc)
    assert "another model config" in line and "pick a new hydra.run.dir" in line
    assert digests(run_dir) == before


def test_resume_from_a_folder_without_backup_ends_in_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    line = one_error_line(train(tmp_path / "run", f"trainer.resume={tmp_path / 'empty'}"))
    assert f"no backup in {tmp_path / 'empty' / 'backup'}" in line


def test_fresh_run_starts_a_new_log_and_files_follow_the_umask(reference, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "train_log.csv").write_text("epoch,loss\n0,9.9\n1,9.8\n")  # an older run's log
    old = os.umask(0o002)  # group-writable, like a shared project folder
    try:
        ok(train(run_dir))
    finally:
        os.umask(old)
    assert (run_dir / "train_log.csv").read_text() == (reference / "train_log.csv").read_text()
    files = [run_dir / "model.keras", run_dir / "metrics.json", run_dir / "config.yaml"]
    files += reliability.list_backups(run_dir / "backup")
    for path in files:
        assert path.stat().st_mode & 0o777 == 0o664, path


@pytest.mark.slow
def test_sigterm_leaves_backup_exits_143_and_resumes_bitwise(reference, tmp_path):
    run_dir = tmp_path / "run"
    proc = train(run_dir, fault="TERM@5")
    assert proc.returncode == 143, proc.stderr[-3000:]
    assert "Stopped by SIGTERM at step 5; backup" in proc.stderr
    assert "Traceback" not in proc.stderr
    names = [p.name for p in reliability.list_backups(run_dir / "backup")]
    assert names == ["step-000000005.npz", "step-000000004.npz"]
    ok(train(run_dir))
    assert_same_run(reference, run_dir)


def test_signal_at_an_epoch_end_waits_for_the_epoch_backup(reference, tmp_path):
    # SIGTERM after step 4, the last step of epoch 1: the run finishes that epoch (validation,
    # the epoch-end backup) and stops there, so the backup is a whole epoch.
    run_dir = tmp_path / "run"
    proc = train(run_dir, fault="TERM@4")
    assert proc.returncode == 143, proc.stderr[-3000:]
    assert [p.name for p in reliability.list_backups(run_dir / "backup")] == ["step-000000004.npz"]
    assert reliability.load_latest(run_dir / "backup").epochs_done == 1
