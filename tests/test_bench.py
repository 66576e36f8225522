"""The benchmarks keep working: `python -m bench.run all --smoke` writes complete JSON and
the report turns it into the docs tables. No timing is asserted (CI machines vary)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _module(name: str) -> list[str]:
    """The command running `bench.<name>` as the docs say: `python -m bench.<name>`."""
    return [sys.executable, "-m", f"bench.{name}"]


def _run_script(name: str, *args: str, out: Path) -> dict:
    """Run `python -m bench.<name>` with `--out out` from the repository root; its JSON."""
    proc = subprocess.run(
        [*_module(name), *args, "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def smoke_result(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return _run_script("run", "all", "--smoke", out=tmp_path_factory.mktemp("bench") / "s.json")


def _positive(x: object) -> bool:
    return isinstance(x, (int, float)) and x > 0


@pytest.mark.slow  # runs a benchmark end to end (tiny model): half a minute
def test_machine_facts(smoke_result: dict) -> None:
    m = smoke_result["machine"]
    for key in ("cpu", "logical_cores", "tensorflow", "keras", "intra_op_threads"):
        assert key in m
    assert len(smoke_result["load_start"]) == 3 and len(smoke_result["load_end"]) == 3
    assert smoke_result["settings"]["smoke"] is True


@pytest.mark.slow  # runs a benchmark end to end (tiny model): half a minute
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


@pytest.mark.slow  # runs a benchmark end to end (tiny model): half a minute
def test_report_fills_the_doc_markers(smoke_result: dict, tmp_path: Path) -> None:
    result = tmp_path / "r.json"
    result.write_text(json.dumps(smoke_result))
    doc = tmp_path / "doc.md"
    doc.write_text(
        "# T\n<!-- bench:tables:start -->\nOLD-TABLES\n<!-- bench:tables:end -->\ntail\n"
    )
    subprocess.run(
        [*_module("run"), "report", str(result), "--doc", str(doc)],
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
            *_module("run"),
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
    import keras

    import zoo

    bench = _load("speed")
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


def _load(name: str):
    import importlib

    return importlib.import_module(f"bench.{name}")


def test_profile_conv_flops_from_onednn_descriptors() -> None:
    profile = _load("profile_step")
    # 3x3, 64 -> 64 channels, 64x64 output, batch 8: 2 * 8*64*64 * 64 * 9*64 by hand.
    desc = "mb8_ic64oc64_ih64oh64kh3sh1dh0ph1_iw64ow64kw3sw1dw0pw1"
    assert profile.conv_flops(desc) == 2 * 8 * 64 * 64 * 64 * 9 * 64
    # Depthwise (32 groups of one channel): each output sees 9 inputs.
    desc = "g32mb2_ic32oc32_ih8oh8kh3sh1dh0ph1_iw8ow8kw3sw1dw0pw1"
    assert profile.conv_flops(desc) == 2 * 2 * 8 * 8 * 32 * 9
    log = [
        "onednn_verbose,v1,primitive,exec,cpu,convolution,brg_conv_fwd:avx512_core,"
        "forward_training,src:f32::blocked:acdb::f0,,alg:convolution_direct,"
        "mb8_ic64oc64_ih64oh64kh3sh1dh0ph1_iw64ow64kw3sw1dw0pw1,20.0",
        "onednn_verbose,v1,primitive,exec,cpu,convolution,brg_conv_fwd:avx512_core,"
        "forward_training,src:f32::blocked:acdb::f0,,alg:convolution_direct,"
        "mb8_ic64oc64_ih64oh64kh3sh1dh0ph1_iw64ow64kw3sw1dw0pw1,30.0",
        "onednn_verbose,v1,primitive,exec,cpu,reorder,jit:uni,undef,src:f32 dst:f32,,,64x3,1.5",
        "something else",
    ]
    parsed = profile.parse_onednn_log(log)
    conv = next(g for g in parsed["by_kind"] if g["primitive"] == "convolution")
    assert conv["calls"] == 2 and conv["ms"] == 50.0 and parsed["total_ms"] == 51.5
    assert conv["gflop_s"] == pytest.approx(2 * 2 * 8 * 64 * 64 * 64 * 9 * 64 / 1e9 / 0.05)


def test_profile_table_row_hand_worked() -> None:
    profile = _load("profile_step")

    def conv(kind, ms, gflop_s):
        return {"primitive": "convolution", "kind": kind, "ms": ms, "gflop_s": gflop_s}

    result = {
        "model": "pan",
        "precision": "float32",
        "tf_profile": {
            "step_ms": 1000.4,
            "op_ms_by_type": {"_MklNativeConv2D": 300.0, "ResizeBilinear": 50.0, "Mul": 7.0},
        },
        "onednn": {
            "step_ms": 800.0,
            "by_kind": [
                conv("forward_training", 200.0, 150.0),
                conv("backward_weights", 300.0, 100.0),
                {"primitive": "reorder", "kind": "undef", "ms": 10.0, "gflop_s": None},
            ],
        },
    }
    # Convolutions: 200 + 300 of the 800 ms oneDNN step = 62%; no backward-data entry.
    assert profile.table_row(result, others=2) == (
        "| pan | float32 | 1000 | 200 (150) | - | 300 (100) | 62% | ResizeBilinear 50, Mul 7 |"
    )
    assert profile.table([result]).splitlines()[2] == profile.table_row(result)


@pytest.mark.slow  # runs a benchmark end to end (tiny model): half a minute
def test_profile_smoke_runs(tmp_path: Path) -> None:
    result = _run_script("profile_step", "--smoke", out=tmp_path / "profile.json")
    tfp = result["tf_profile"]
    assert _positive(tfp["step_ms"]) and _positive(tfp["op_ms_total"])
    assert any("Conv2D" in t for t in tfp["op_ms_by_type"])
    if result["machine"].get("onednn"):  # oneDNN's log exists only where it runs
        kinds = {g["kind"] for g in result["onednn"]["by_kind"] if g["primitive"] == "convolution"}
        assert {"forward_training", "backward_weights"} <= kinds


def test_head_to_head_table_uses_paired_round_ratios() -> None:
    # Ratio = median over rounds of smp's time / ours, round by round: [1.5, 1.5, 0.75] -> 1.5
    # (the ratio of the medians would be 3 / 2 = 1.5 too, the mean of the ratios 1.25).
    bench = _load("report")
    row = {"train_times_s": [2.0, 2.0, 4.0], "infer_times_s": [1.0, 1.0, 1.0]}
    entry = {
        "precision": "float32",
        "rounds": 3,
        "rows": [
            {"variant": "default", "train_img_s": 4.0, "infer_img_s": 8.0, **row},
            {
                "variant": "smp",
                "train_img_s": 2.67,
                "infer_img_s": 4.0,
                "train_times_s": [3.0, 3.0, 3.0],
                "infer_times_s": [2.0, 3.0, 2.0],
                "versions": {"torch": "9.9", "segmentation_models_pytorch": "0.6.0"},
            },
        ],
    }
    table = bench.head_to_head_markdown([entry, {"precision": "x", "rounds": 1, "rows": []}])
    (line,) = [x for x in table.splitlines() if x.startswith("| float32")]
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[:8] == ["float32", "3", "4.00", "2.67", "1.50x", "8.00", "4.00", "2.00x"]
    assert "smp 0.6.0 on torch 9.9" in table
    assert bench.head_to_head_markdown([]) == ""


@pytest.mark.slow  # runs a benchmark end to end (tiny model): half a minute
def test_tiled_smoke_writes_json_and_the_doc_table(tmp_path: Path) -> None:
    out = tmp_path / "t.json"
    result = _run_script("tiled", "all", "--smoke", "--memory-sizes", "256", out=out)
    rows = result["throughput"]
    assert rows and all("error" not in r and _positive(r["mpix_s"]) for r in rows)
    (mem,) = result["memory"]
    assert mem["peak_rss_mib"] > mem["arrays_mib"] > 0
    doc = tmp_path / "doc.md"
    doc.write_text("# T\n<!-- bench:tiled:start -->\nOLD\n<!-- bench:tiled:end -->\ntail\n")
    subprocess.run(
        [*_module("tiled"), "report", str(tmp_path / "t.json"), "--doc", str(doc)],
        check=True,
        capture_output=True,
        cwd=ROOT,
    )
    text = doc.read_text()
    assert "OLD" not in text and "| float32 | 64 | 0.5 | flip |" in text and text.endswith("tail\n")


def test_head_to_head_tables_per_model() -> None:
    bench = _load("report")
    row = {"train_times_s": [1.0], "infer_times_s": [1.0], "train_img_s": 8.0, "infer_img_s": 8.0}
    smp_row = {**row, "variant": "smp", "train_times_s": [1.25], "infer_times_s": [0.5]}

    def entry(model, arch, precision):
        rows = [{**row, "variant": "default"}, smp_row]
        return {"model": model, "smp_arch": arch, "precision": precision, "rounds": 1, "rows": rows}

    table = bench.head_to_head_markdown(
        [entry("pan", "PAN", "float32"), entry("upernet", "UPerNet", "float32")]
    )
    assert "`pan` vs smp `PAN`" in table and "`upernet` vs smp `UPerNet`" in table
    lines = [x for x in table.splitlines() if x.startswith("| float32")]
    assert len(lines) == 2 and all("| 1.25x |" in x and "| 0.50x |" in x for x in lines)


def test_tune_smp_counterparts_are_registered_models() -> None:
    import zoo

    tune = _load("tune")
    assert set(tune.SMP_ARCH) <= set(zoo.list_models())
    assert {"unetplusplus", "linknet", "pspnet", "pan", "manet", "upernet"} <= set(tune.SMP_ARCH)
    assert {"deeplabv3", "deeplabv3plus", "unet", "fpn"} <= set(tune.SMP_ARCH)
