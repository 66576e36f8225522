"""Export memory: the peak resident memory and time of `zoo.export` per format.

Each export runs in a fresh interpreter (peak resident memory only grows within a process):
it builds the model (default configuration, random weights), records its resident memory,
exports, and reports the process's peak and the export's seconds. The `onnx (tf2onnx as
released)` row converts without `zoo.export.formats._lean_tf2onnx` (what the ONNX export
needed before it, and what a plain `tf2onnx.convert.from_function` call needs).

    python -m bench.export_memory --out bench/results/export_memory.json --doc docs/benchmarks.md
    python -m bench.export_memory report bench/results/export_memory.json --doc docs/benchmarks.md
    python -m bench.export_memory --smoke --out /tmp/export_memory.json     # tiny U-Net, CI
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

from bench.common import ROOT, load_average, machine_facts, module_command, write_json
from bench.pipeline import rss_high_water_mib
from bench.report import update_doc

DOC_START = "<!-- bench:export-memory:start -->"
DOC_END = "<!-- bench:export-memory:end -->"
# (row name, format, quantize, converter as released); LiteRT at the training size.
VARIANTS = (
    ("SavedModel", "saved_model", None, False),
    ("LiteRT float32", "litert", None, False),
    ("LiteRT int8", "litert", "int8", False),
    ("ONNX", "onnx", None, False),
    ("ONNX (tf2onnx as released)", "onnx", None, True),
)


def resident_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(args: argparse.Namespace) -> None:
    """One export in this process; prints a JSON line."""
    import contextlib

    import zoo
    import zoo.export as zexport

    if args.released:
        zexport.formats._lean_tf2onnx = contextlib.nullcontext
    config = dict(zoo.model_info(args.model).tiny_config) if args.smoke else {}
    model = zoo.create_model(args.model, num_classes=1, input_shape=(None, None, 3), **config)
    model.metadata["image_size"] = [args.size, args.size]
    weights = sum(int(v.numpy().nbytes) for v in model.weights) / 2**20
    before, before_peak = resident_mib(), rss_high_water_mib()
    with tempfile.TemporaryDirectory(prefix="segzoo_bench_export_memory_") as tmp:
        path = Path(tmp) / f"model{zexport.formats.SUFFIXES[args.format]}"
        start = time.perf_counter()
        zexport.export(model, path, format=args.format, quantize=args.quantize)
        seconds = time.perf_counter() - start
    row = {
        "weights_mib": round(weights, 1),
        "model_rss_mib": round(before, 1),
        "peak_before_export_mib": round(before_peak, 1),
        "peak_mib": round(rss_high_water_mib(), 1),
        "export_s": round(seconds, 2),
    }
    print("RESULT " + json.dumps(row), flush=True)


def measure(name: str, fmt: str, quantize: str | None, released: bool, args) -> dict[str, Any]:
    cmd = module_command("export_memory") + ["child", "--model", args.model, "--format", fmt]
    cmd += ["--size", str(args.size)] + (["--quantize", quantize] if quantize else [])
    cmd += ["--released"] * released + ["--smoke"] * args.smoke
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=1800)
    base = {"model": args.model, "export": name, "format": fmt, "quantize": quantize}
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        why = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
        return {**base, "error": f"exit {proc.returncode}: {why[:300]}"}
    return {**base, **json.loads(lines[-1][len("RESULT ") :])}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from zoo.export import missing_modules

    result = {
        "machine": machine_facts(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "load_start": load_average(),
        "settings": {"model": args.model, "size": args.size, "smoke": args.smoke},
        "rows": [],
    }
    for name, fmt, quantize, released in VARIANTS:
        missing = missing_modules(fmt)
        if missing:
            row = {"model": args.model, "export": name, "error": f"not installed: {missing}"}
        else:
            row = measure(name, fmt, quantize, released, args)
        result["rows"].append(row)
        print(json.dumps(row), flush=True)
        if args.out:
            write_json(Path(args.out), result)
    result["load_end"] = load_average()
    if args.out:
        write_json(Path(args.out), result)
    return result


def markdown(result: dict[str, Any]) -> str:
    m, st = result.get("machine", {}), result.get("settings", {})
    text = (
        f"Machine: {m.get('cpu')} ({m.get('usable_cores')} cores), TensorFlow "
        f"{m.get('tensorflow')}; model `{st.get('model')}` "
        f"({'tiny' if st.get('smoke') else 'default'} configuration, random weights), "
        f"LiteRT at {st.get('size')}x{st.get('size')}, ONNX and SavedModel at any size; "
        f"git {m.get('git_commit')}, {result.get('date')}"
        + (" (smoke run: tiny model, not a measurement)" if st.get("smoke") else "")
        + ".\n\n| export | weights MiB | process peak MiB | peak over the built model MiB "
        "| seconds |\n|---|---:|---:|---:|---:|\n"
    )
    errors = []
    for r in result.get("rows", []):
        if "error" in r:
            errors.append(f"- {r['export']}: {r['error']}")
            continue
        over = r["peak_mib"] - max(r["model_rss_mib"], r["peak_before_export_mib"])
        text += (
            f"| {r['export']} | {r['weights_mib']:.0f} | {r['peak_mib']:.0f} | {over:.0f} "
            f"| {r['export_s']:.1f} |\n"
        )
    if errors:
        text += "\nNot measured:\n\n" + "\n".join(errors) + "\n"
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("command", nargs="?", default="run", choices=("run", "report", "child"))
    p.add_argument("result", nargs="?", help="report: the result JSON")
    p.add_argument("--model", default="unet")
    p.add_argument("--size", type=int, help="LiteRT's fixed input size (default 256; smoke 64)")
    p.add_argument("--smoke", action="store_true", help="the model's tiny configuration")
    p.add_argument("--out", help="result JSON")
    p.add_argument("--doc", help="markdown file whose export-memory markers get the table")
    # child only
    p.add_argument("--format", help=argparse.SUPPRESS)
    p.add_argument("--quantize", help=argparse.SUPPRESS)
    p.add_argument("--released", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.size = args.size or (64 if args.smoke else 256)
    if args.command == "child":
        child(args)
        return 0
    if args.command == "report":
        if not args.result:
            raise SystemExit("report needs the result JSON path")
        result = json.loads(Path(args.result).read_text())
    else:
        result = run(args)
    text = markdown(result)
    print(text)
    if args.doc:
        update_doc(Path(args.doc), text, DOC_START, DOC_END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
