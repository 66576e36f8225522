"""Export latency: every registered model in every runtime, batch 1, against smp in ONNX Runtime.

Per model and input size (default 256x256 and 512x512): the Keras model's compiled call
(`tf.function`, float32 input, logits only), then the exported artifacts (zoo.export, uint8
input with the preprocessing and the three outputs inside) in their runtimes: SavedModel
(TensorFlow), LiteRT float32 / float16 / int8 (dynamic range) / int8-full (integer kernels,
calibrated on shapes images) and ONNX Runtime. The reference row is the counterpart
segmentation_models_pytorch model exported to ONNX by torch (bench/smp_onnx.py in the
reference interpreter) and run in the same ONNX Runtime. Every runtime gets `--threads`
threads (TensorFlow intra-op, inter-op 1); the runtimes are called in turn, round after
round (A B C ... A B C), so a load change on the machine hits all alike; medians of `--runs`.

    python -m bench.export --out bench/results/export.json                  # full (~20 min)
    python -m bench.export --models unet --sizes 256                        # one part
    python -m bench.export report bench/results/export.json --doc docs/benchmarks.md
    python -m bench.export --smoke --out /tmp/export_smoke.json             # tiny, CI

The reference needs `$SEGZOO_REF_PYTHON` (or `--ref-python`): a Python with torch, smp and
onnx (the `ref` extra); without one the reference rows are left out and the JSON says why.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent

from bench.common import load_average, machine_facts, median, write_json  # noqa: E402
from bench.report import update_doc  # noqa: E402
from bench.tune import SMP_ARCH  # noqa: E402

DOC_START = "<!-- bench:export:start -->"
DOC_END = "<!-- bench:export:end -->"
# (format, quantize) of each exported runtime, in table order.
VARIANTS = (
    ("saved_model", None),
    ("litert", None),
    ("litert", "float16"),
    ("litert", "int8"),
    ("litert", "int8-full"),
    ("onnx", None),
)
# Our model -> its segmentation_models_pytorch counterpart (architecture, encoder).
# Every default config uses ResNet-34, SegFormer MiT-B0 (conf/model/*.yaml).
SMP_COUNTERPARTS = {name: (arch, "resnet34") for name, arch in SMP_ARCH.items()}
SMP_COUNTERPARTS["segformer"] = ("Segformer", "mit_b0")
SMOKE_SMP = ("Unet", "resnet18")


def variant_name(fmt: str, quantize: str | None) -> str:
    return {"saved_model": "SavedModel", "onnx": "ONNX Runtime"}.get(fmt) or (
        f"LiteRT {quantize or 'float32'}"
    )


def build(name: str, smoke: bool) -> Any:
    import zoo

    config = dict(zoo.model_info(name).tiny_config) if smoke else {}
    return zoo.create_model(name, num_classes=1, input_shape=(None, None, 3), **config)


def export_all(model: Any, size: int, out: Path, samples: int) -> dict[str, Any]:
    """Export every variant; {name: (path, format, seconds) or error text}."""
    import zoo.export as zexport
    from zoo.data import generate_shapes

    calibration = generate_shapes(samples, (size, size), seed=1, split="train").images
    done = {}
    for fmt, quantize in VARIANTS:
        name = variant_name(fmt, quantize)
        suffix = zexport.formats.SUFFIXES[fmt]
        path = out / f"{model.name}_{size}_{fmt}_{quantize or 'float32'}{suffix}"
        if zexport.missing_modules(fmt):
            done[name] = f"not installed: {zexport.missing_modules(fmt)}"
            continue
        start = time.perf_counter()
        try:
            zexport.export(
                model,
                path,
                format=fmt,
                quantize=quantize,
                input_size=(size, size) if fmt == "litert" else None,
                representative_data=calibration if quantize == "int8-full" else None,
                calibration_samples=samples,
            )
            done[name] = (path, fmt, time.perf_counter() - start)
        except Exception as err:  # noqa: BLE001 - one row's failure is reported, not fatal
            done[name] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
    return done


def smp_onnx(arch: str, encoder: str, sizes: list[int], out: Path, ref_python: str | None):
    """{size: path} of the smp counterpart exported by torch, or an error text."""
    if not ref_python:
        return "no reference interpreter: set SEGZOO_REF_PYTHON or pass --ref-python"
    cmd = [ref_python, str(BENCH / "smp_onnx.py"), "--arch", arch, "--encoder", encoder]
    cmd += ["--sizes", *map(str, sizes), "--out-dir", str(out)]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or ["(no message)"]
        # The exception's own line, not the tail of a multi-line message.
        why = next((x for x in reversed(lines) if "Error:" in x), lines[-1]).strip()
        return f"bench/smp_onnx.py failed: {why[:300]}"
    info = json.loads((out / "versions.json").read_text())
    return {int(k): Path(v) for k, v in info["files"].items()}, info["versions"]


def ort_session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def time_interleaved(calls: dict[str, Any], runs: int, warmup: int) -> dict[str, list[float]]:
    """Call every function in turn, round after round; per-call seconds after warm-up."""
    times: dict[str, list[float]] = {k: [] for k in calls}
    for i in range(warmup + runs):
        for key, fn in calls.items():
            start = time.perf_counter()
            fn()
            if i >= warmup:
                times[key].append(time.perf_counter() - start)
    return times


def bench_model(name: str, args: argparse.Namespace, tmp: Path, ref_python: str | None) -> list:
    import tensorflow as tf

    import zoo.export as zexport

    model = build(name, args.smoke)
    rows: list[dict[str, Any]] = []
    counterpart = SMP_COUNTERPARTS.get(name)
    if args.smoke and counterpart:
        counterpart = SMOKE_SMP  # a small one: the smoke run checks the plumbing only
    smp = None
    if counterpart and not args.no_reference:
        smp = smp_onnx(*counterpart, args.sizes, tmp / f"smp_{name}", ref_python)
    for size in args.sizes:
        base = {"model": name, "size": size, "batch": 1}
        image_f32 = np.random.default_rng(0).random((1, size, size, 3), dtype=np.float32)
        image_u8 = np.round(image_f32 * 255).astype(np.uint8)
        keras_fn = tf.function(lambda x: model(x, training=False), jit_compile=False)
        x = tf.constant(image_f32)
        calls = {"Keras (tf.function)": lambda fn=keras_fn, x=x: fn(x).numpy()}
        info: dict[str, Any] = {"Keras (tf.function)": {}}
        for key, value in export_all(model, size, tmp, args.calibration_samples).items():
            if isinstance(value, str):
                rows.append({**base, "runtime": key, "error": value})
                continue
            path, fmt, seconds = value
            runner = zexport.load_runner(path, fmt, num_threads=args.threads)
            calls[key] = lambda r=runner, x=image_u8: r(x)
            info[key] = {"export_s": round(seconds, 2), "file_mib": round(_size_mib(path), 2)}
        if isinstance(smp, tuple):
            files, versions = smp
            session = ort_session(files[size], args.threads)
            nchw = np.ascontiguousarray(image_f32.transpose(0, 3, 1, 2))
            key = "smp (ONNX Runtime)"
            calls[key] = lambda s=session, v=nchw: s.run(None, {"image": v})
            info[key] = {"counterpart": "-".join(counterpart), **versions}
        elif isinstance(smp, str):
            rows.append({**base, "runtime": "smp reference", "error": smp})
        times = time_interleaved(calls, args.runs, args.warmup)
        for key, ts in times.items():
            row = {**base, "runtime": key, "median_ms": round(1e3 * median(ts), 2)}
            row["p10_ms"] = round(1e3 * float(np.percentile(ts, 10)), 2)
            row["p90_ms"] = round(1e3 * float(np.percentile(ts, 90)), 2)
            rows.append({**row, **info[key]})
            print(f"{name} {size} {key}: {row['median_ms']} ms", flush=True)
    return rows


def _size_mib(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 2**20


def run(args: argparse.Namespace) -> dict[str, Any]:
    import tensorflow as tf

    import zoo

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    ref_python = args.ref_python or os.environ.get("SEGZOO_REF_PYTHON")
    result = {
        "machine": machine_facts(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "load_start": load_average(),
        "settings": {
            "smoke": args.smoke,
            "sizes": args.sizes,
            "runs": args.runs,
            "warmup": args.warmup,
            "threads": args.threads,
            "calibration_samples": args.calibration_samples,
        },
        "rows": [],
    }
    with tempfile.TemporaryDirectory(prefix="segzoo_bench_export_") as tmp:
        for name in args.models or (["unet"] if args.smoke else zoo.list_models()):
            result["rows"] += bench_model(name, args, Path(tmp), ref_python)
            result["load_end"] = load_average()
            if args.out:  # after every model, so a long run that is cut keeps what it measured
                write_json(Path(args.out), result)
    return result


def markdown(result: dict[str, Any]) -> str:
    """The latency table of a result file (what docs/benchmarks.md shows)."""
    m, st = result.get("machine", {}), result.get("settings", {})
    rows = result.get("rows", [])
    runtimes: list[str] = []
    for r in rows:
        if r["runtime"] not in runtimes and "error" not in r:
            runtimes.append(r["runtime"])
    head = (
        f"Machine: {m.get('cpu')} ({m.get('usable_cores')} cores), TensorFlow "
        f"{m.get('tensorflow')}, {st.get('threads')} threads per runtime; batch 1, median "
        f"ms of {st.get('runs')} calls after {st.get('warmup')} warm-up, runtimes in turn. "
        f"Load average at start {result.get('load_start')}, at end {result.get('load_end')}; "
        f"git {m.get('git_commit')}, {result.get('date')}"
        + (" (smoke run: tiny models, not a measurement)" if st.get("smoke") else "")
        + ".\n"
    )
    table = [
        "| model | size | " + " | ".join(runtimes) + " |",
        "|---|---:|" + "---:|" * len(runtimes),
    ]
    keys = sorted({(r["model"], r["size"]) for r in rows})
    errors = []
    for model, size in keys:
        cells = []
        for rt in runtimes:
            match = [
                r
                for r in rows
                if (r["model"], r["size"], r["runtime"]) == (model, size, rt) and "error" not in r
            ]
            cells.append(f"{match[0]['median_ms']:.1f}" if match else "—")
        table.append(f"| {model} | {size} | " + " | ".join(cells) + " |")
        errors += [
            f"- {model} {size} {r['runtime']}: {r['error']}"
            for r in rows
            if (r["model"], r["size"]) == (model, size) and "error" in r
        ]
    text = head + "\n" + "\n".join(table) + "\n"
    counterparts = sorted(
        {f"{r['model']}: smp {r['counterpart']}" for r in rows if "counterpart" in r}
    )
    if counterparts:
        text += "\nReference (random weights, exported by torch): " + ", ".join(counterparts)
        text += ".\n"
    if errors:
        text += "\nNot measured:\n\n" + "\n".join(errors) + "\n"
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("command", nargs="?", default="run", choices=("run", "report"))
    p.add_argument("result", nargs="?", help="report: the result JSON")
    p.add_argument("--smoke", action="store_true", help="tiny U-Net, 64x64, 2 runs (CI)")
    p.add_argument("--models", nargs="+", help="registered names (default: all; smoke: unet)")
    p.add_argument("--sizes", type=int, nargs="+", help="default 256 512 (smoke: 64)")
    p.add_argument("--runs", type=int, help="timed calls per runtime (default 20; smoke 2)")
    p.add_argument("--warmup", type=int, help="untimed calls per runtime (default 3; smoke 1)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--calibration-samples", type=int, help="int8-full (default 32; smoke 4)")
    p.add_argument("--no-reference", action="store_true", help="leave out the smp rows")
    p.add_argument("--ref-python", help="interpreter with torch, smp, onnx")
    p.add_argument("--out", help="result JSON")
    p.add_argument("--doc", help="markdown file whose export markers get the table")
    args = p.parse_args(argv)
    if args.command == "report":
        if not args.result:
            raise SystemExit("report needs the result JSON path")
        text = markdown(json.loads(Path(args.result).read_text()))
        print(text)
        if args.doc:
            update_doc(Path(args.doc), text, DOC_START, DOC_END)
        return 0
    args.sizes = args.sizes or ([64] if args.smoke else [256, 512])
    args.runs = args.runs or (2 if args.smoke else 20)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.smoke else 3)
    args.calibration_samples = args.calibration_samples or (4 if args.smoke else 32)
    result = run(args)
    print(markdown(result))
    if args.doc:
        update_doc(Path(args.doc), markdown(result), DOC_START, DOC_END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
