"""trainer.export: checked before anything is built, written next to model.keras at the end
(the end-to-end run is tests/test_app_channels.py::test_gray_folder_trains_exports_and_predicts)."""

import json
from pathlib import Path

import numpy as np
import pytest
from test_configs import make
from test_train import one_error_line, train

from zoo.config import ExportRequest, export_requests, validate
from zoo.errors import ConfigError, MissingDependencyError
from zoo.export import ExportError
from zoo.training import artifacts
from zoo.training.budget import ARTIFACT_EXPORT_S, TAIL_EXPORT_S, export_tail_s


def test_entries_by_hand():
    assert export_requests(None) == export_requests([]) == ()
    assert export_requests("onnx") == (ExportRequest("onnx"),)
    got = export_requests(["saved_model", "tflite:int8", "litert:int8", "litert:none",
                           "saved_model:float16", "litert:int8-full"])  # fmt: skip
    assert [r.label for r in got] == [
        "saved_model", "litert:int8", "litert", "saved_model:float16", "litert:int8-full",
    ]  # fmt: skip
    run = validate(make(["trainer.export=[saved_model,onnx]"]))
    assert [r.label for r in export_requests(run.trainer.export)] == ["saved_model", "onnx"]


@pytest.mark.parametrize(
    "value,text",
    [
        (
            ["onxx"],
            "unknown format 'onxx'; valid entries: saved_model, saved_model:float16, "
            "litert, litert:float16, litert:int8, litert:int8-full, onnx",
        ),
        (["onnx:int8"], "onnx takes no quantization"),
        (["saved_model:int8"], "saved_model takes saved_model:float16"),
        ([3], "entry 3: expected a format name"),
        ({"a": 1}, "expected a list of formats"),
    ],
)
def test_bad_entries_are_one_line(value, text):
    with pytest.raises(ConfigError) as info:
        export_requests(value)
    assert text in str(info.value) and "\n" not in str(info.value)


def test_a_missing_converter_is_named(monkeypatch):
    from zoo.export import formats

    monkeypatch.setattr(formats, "missing_modules", lambda f: ["tf2onnx"] if f == "onnx" else [])
    with pytest.raises(MissingDependencyError, match=r"'onnx' needs tf2onnx.*segzoo\[export\]"):
        validate(make(["trainer.export=[saved_model,onnx]"]))


def test_train_py_refuses_a_bad_entry_before_building_anything(tmp_path):
    run_dir = tmp_path / "run"
    line = one_error_line(train(["trainer.export=[saved_model,onxx]"], run_dir))
    assert "trainer.export entry 'onxx': unknown format" in line
    assert not (run_dir / "backup").exists() and not (run_dir / "model.keras").exists()


def test_artifacts_are_written_with_the_run_settings(tmp_path, monkeypatch):
    """What write_artifacts asks of zoo.export: the default paths next to model.keras, the
    training size (rounded up to the divisor) for LiteRT, training images for int8-full; a
    failure is recorded and returned, the other artifacts still written."""
    from zoo import export as zexport

    calls = []

    class Result:
        logits_error, mask_agreement = 1e-7, 1.0

    def fake_export(model, path, **kw):
        calls.append((Path(path).name, kw))
        if kw["format"] == "onnx":
            raise ExportError("Cannot export unet to onnx: boom")
        return Result()

    monkeypatch.setattr(zexport, "export", fake_export)
    model = type("M", (), {"divisor": 32})()
    images = np.zeros((40, 8, 8, 1), np.float32)
    asked = []

    def calibration(n):
        asked.append(n)
        return images[:n]

    requests = export_requests(["saved_model", "onnx", "litert:int8-full"])
    results, first = artifacts.write_artifacts(
        model, tmp_path / "model.keras", requests, (50, 64), calibration
    )
    assert [c[0] for c in calls] == ["model_saved_model", "model.onnx", "model_int8_full.tflite"]
    assert calls[0][1]["input_size"] is None and calls[0][1]["overwrite"] is True
    assert calls[2][1]["input_size"] == (64, 64) and calls[2][1]["quantize"] == "int8-full"
    assert calls[2][1]["representative_data"].shape == (32, 8, 8, 1) and asked == [32]
    assert results["onnx"] == {"error": "Cannot export unet to onnx: boom"}
    assert isinstance(first, ExportError)
    assert results["saved_model"]["path"] == "model_saved_model"
    assert results["litert:int8-full"]["logits_error"] == 1e-7


def test_training_images_and_sizes_by_hand():
    stream = [{"image": np.full((4, 2, 2, 1), i, np.float32)} for i in range(5)]
    got = artifacts.training_images(stream, 10)
    assert got.shape == (10, 2, 2, 1) and got[:, 0, 0, 0].tolist() == [0] * 4 + [1] * 4 + [2] * 2
    model = type("M", (), {"divisor": 32})()
    assert artifacts.export_size(model, (64, 65)) == (64, 96)


def test_a_time_budget_keeps_time_for_the_artifacts():
    assert export_tail_s([]) == TAIL_EXPORT_S
    want = TAIL_EXPORT_S + ARTIFACT_EXPORT_S["saved_model"] + ARTIFACT_EXPORT_S["litert"]
    assert export_tail_s(["saved_model", "litert:int8"]) == want


def test_a_failed_export_is_raised_after_the_other_outputs(tmp_path, monkeypatch):
    """In-process run: onnx fails verification, saved_model is written; metrics.json, config
    and overlays are there, metrics.json names the failure, and the run ends with it."""
    from test_app_channels import gray_folder

    from zoo import export as zexport
    from zoo.app import run

    real = zexport.export

    def flaky(model, path, **kw):
        if kw["format"] == "onnx":
            raise ExportError("Export unet to onnx failed verification 3 times, nothing written")
        return real(model, path, **kw)

    monkeypatch.setattr(zexport, "export", flaky)
    root = gray_folder(tmp_path / "gray")
    cfg = make(["data=folder", f"data.root={root}", "data.channels=1", "data.batch_size=2",
                "trainer.max_steps=1", "trainer.export=[onnx,saved_model]",
                "model.encoder=resnet18", "+model.encoder_kwargs.base_width=8",
                "model.decoder_channels=[16,8,8,8,8]", "trainer.tensorboard=false",
                "trainer.verbose=0", "trainer.num_overlays=1"])  # fmt: skip
    run_dir = tmp_path / "run"
    with pytest.raises(ExportError, match="onnx failed verification"):
        run(cfg, run_dir, explicit=set())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["exports"]["onnx"] == {
        "error": "Export unet to onnx failed verification 3 times, nothing written"
    }
    assert metrics["exports"]["saved_model"]["logits_error"] <= 1e-5
    assert (run_dir / "model_saved_model").is_dir() and not (run_dir / "model.onnx").exists()
    assert (run_dir / "config.yaml").is_file() and list((run_dir / "overlays").glob("*.png"))
