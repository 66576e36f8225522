"""The benchmark scripts keep working: `bench/run.py all --smoke` writes complete JSON and the
report turns it into the docs tables. No timing is asserted (CI machines vary)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "run.py"


@pytest.fixture(scope="module")
def smoke_result(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "smoke.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "all", "--smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def _positive(x: object) -> bool:
    return isinstance(x, (int, float)) and x > 0


def test_machine_facts(smoke_result: dict) -> None:
    m = smoke_result["machine"]
    for key in ("cpu", "logical_cores", "tensorflow", "keras", "intra_op_threads"):
        assert key in m
    assert len(smoke_result["load_start"]) == 3 and len(smoke_result["load_end"]) == 3
    assert smoke_result["settings"]["smoke"] is True


def test_every_part_has_numbers(smoke_result: dict) -> None:
    rows = smoke_result["throughput"]["rows"]
    assert rows and all("error" not in r for r in rows)
    assert all(_positive(r["train_img_s"]) and _positive(r["infer_img_s"]) for r in rows)

    flops = smoke_result["flops"]
    assert _positive(flops["peak"]["float32"]["flops_per_s"])
    assert all(_positive(m["forward_gflop_per_img"]) for m in flops["models"])
    assert all(_positive(e["train_pct_of_peak"]) for e in flops["efficiency"])

    (ov,) = smoke_result["overhead"]["rows"]
    assert _positive(ov["attach_step_s"]) and _positive(ov["plain_step_s"])

    for case in smoke_result["pipeline"]["cases"]:
        assert _positive(case["tf_data"]["img_s"]) and _positive(case["pydataset"]["img_s"])
        assert _positive(case["tf_data_x_train"])

    (mem,) = smoke_result["memory"]["rows"]
    assert mem["peak_rss_mib"] >= mem["import_rss_mib"] > 0


def test_report_fills_the_doc_markers(smoke_result: dict, tmp_path: Path) -> None:
    result = tmp_path / "r.json"
    result.write_text(json.dumps(smoke_result))
    doc = tmp_path / "doc.md"
    doc.write_text(
        "# T\n<!-- bench:tables:start -->\nOLD-TABLES\n<!-- bench:tables:end -->\ntail\n"
    )
    subprocess.run(
        [sys.executable, str(SCRIPT), "report", str(result), "--doc", str(doc)],
        check=True,
        capture_output=True,
        cwd=ROOT,
    )
    text = doc.read_text()
    assert (
        "OLD-TABLES" not in text and "| unet | float32 | off |" in text and text.endswith("tail\n")
    )


def test_report_compares_with_the_reference(tmp_path: Path) -> None:
    # Hand-made numbers: ours 4.0 / 20.0 img/s against smp's 2.0 / 25.0 gives 2.00x and 0.80x.
    ours = {
        "throughput": {
            "rows": [
                {
                    "model": "unet",
                    "precision": "float32",
                    "xla": False,
                    "train_img_s": 4.0,
                    "infer_img_s": 20.0,
                },
                {
                    "model": "fpn",
                    "precision": "float32",
                    "xla": False,
                    "train_img_s": 9.0,
                    "infer_img_s": 9.0,
                },
            ]
        }
    }
    ref = {
        "torch": "x",
        "rows": [
            {"precision": "float32", "train_img_s": 2.0, "infer_img_s": 25.0},
            {"precision": "bfloat16_autocast", "train_img_s": 1.0, "infer_img_s": 1.0},
        ],
    }
    (tmp_path / "r.json").write_text(json.dumps(ours))
    (tmp_path / "ref.json").write_text(json.dumps(ref))
    out = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "report",
            str(tmp_path / "r.json"),
            "--reference",
            str(tmp_path / "ref.json"),
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout
    rows = [line for line in out.splitlines() if line.startswith("| float32 vs")]
    assert rows == [
        "| float32 vs float32, channels-last | 4.00 | 2.00 | 2.00x | 20.00 | 25.00 | 0.80x |"
    ]
    assert "mixed_bfloat16 vs" not in out  # no bfloat16 row of ours: no comparison row


def test_forward_flops_count_every_convolution() -> None:
    # The profiler's count for a tiny U-Net against a layer-by-layer count: 2 FLOPs per
    # multiply-add; the decoder's UpsampleConcatConv2D does 4 (not 9) per output pixel and
    # upsampled channel, 9 per skip channel.
    import importlib.util

    import keras

    import zoo

    spec = importlib.util.spec_from_file_location("bench_run", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    size = 64
    model = zoo.create_model(
        "unet", num_classes=1, input_shape=(size, size, 3), **zoo.model_info("unet").tiny_config
    )
    expected = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, h, w, c_out = layer.output.shape
            kh, kw, c_in, _ = layer.kernel.shape
            expected += 2 * h * w * c_out * kh * kw * c_in
        elif isinstance(layer, zoo.layers.UpsampleConcatConv2D):
            _, h, w, c_out = layer.output.shape
            up = layer.upsampled_channels
            expected += 2 * h * w * c_out * (4 * up + 9 * (layer.kernel.shape[2] - up))
    counted = bench.forward_flops(model, size)["conv_matmul"]
    assert counted == pytest.approx(expected, rel=1e-3)
