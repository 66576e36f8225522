"""Tiled-inference benchmark: megapixels/s of `zoo.inference` and peak memory on large images.

Throughput: U-Net ResNet-34 (1 class) on one synthetic uint8 RGB image, for every combination
of precision (float32, mixed_bfloat16), tile (256, 512), overlap (0.25, 0.5) and TTA (none,
flip, d4); megapixels of the image per second of wall time (Gaussian blending, probabilities
out, batch 8), median of timed runs after an untimed one that compiles. Memory: a fresh
process per image size (4096^2 and 16384^2) predicts into a float32 output and reports its
peak RSS (`VmHWM`) next to the bytes of the input and output arrays.

    python -m bench.tiled all --out bench/results/tiled_cpu.json     # the full run (long)
    python -m bench.tiled report bench/results/tiled_cpu.json --doc docs/benchmarks.md
    python -m bench.tiled all --smoke --out /tmp/tiled.json           # tiny model, seconds

See docs/inference.md for what the numbers mean and docs/benchmarks.md for the table.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from bench import common  # noqa: E402
from bench.common import module_command  # noqa: E402
from bench.pipeline import rss_high_water_mib  # noqa: E402
from bench.report import update_doc  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOC_START = "<!-- bench:tiled:start -->"
DOC_END = "<!-- bench:tiled:end -->"
PRECISIONS = ("float32", "mixed_bfloat16")
TILES = (256, 512)
OVERLAPS = (0.25, 0.5)
TTAS = ("none", "flip", "d4")
MEMORY_SIZES = (4096, 16384)


class Settings:
    """Sizes of one run (full or `--smoke`)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.smoke = bool(args.smoke)
        self.image = args.image or (160 if self.smoke else 1536)
        self.batch = args.batch or (2 if self.smoke else 8)
        self.reps = args.reps or (1 if self.smoke else 3)
        self.precisions = tuple(args.precisions or (("float32",) if self.smoke else PRECISIONS))
        self.tiles = tuple(args.tiles or ((64,) if self.smoke else TILES))
        self.overlaps = tuple(args.overlaps or ((0.5,) if self.smoke else OVERLAPS))
        self.ttas = tuple(args.ttas or (("none", "flip") if self.smoke else TTAS))
        self.memory_sizes = tuple(args.memory_sizes or ((256, 512) if self.smoke else MEMORY_SIZES))
        self.memory_tile = 64 if self.smoke else 512

    def model(self, precision: str) -> Any:
        import keras

        import zoo

        keras.mixed_precision.set_dtype_policy(precision)
        try:
            kwargs = dict(zoo.model_info("unet").tiny_config) if self.smoke else {}
            return zoo.create_model("unet", num_classes=1, **kwargs)  # ResNet-34 by default
        finally:
            keras.mixed_precision.set_dtype_policy("float32")

    def as_dict(self) -> dict[str, Any]:
        return {
            "smoke": self.smoke,
            "model": "unet (tiny_config)" if self.smoke else "unet resnet34",
            "image": [self.image, self.image],
            "batch": self.batch,
            "timed_runs": self.reps,
            "blend": "gaussian",
            "output": "probabilities",
            "memory_tile": self.memory_tile,
        }


def run_throughput(s: Settings) -> list[dict[str, Any]]:
    import zoo.inference as inf

    image = np.random.default_rng(0).integers(0, 256, (s.image, s.image, 3), dtype=np.uint8)
    megapixels = s.image * s.image / 1e6
    rows = []
    for precision in s.precisions:
        model = s.model(precision)
        for tile, overlap, tta in itertools.product(s.tiles, s.overlaps, s.ttas):
            predictor = inf.TiledPredictor(
                model, tile=tile, overlap=overlap, batch_size=s.batch, tta=tta
            )
            py, px = predictor.plans(s.image, s.image)
            row = {
                "precision": precision,
                "tile": tile,
                "overlap": overlap,
                "tta": tta,
                "tiles": len(py.starts) * len(px.starts),
            }
            try:
                predictor.predict(image)  # compiles
                times = []
                for _ in range(s.reps):
                    t0 = time.perf_counter()
                    predictor.predict(image)
                    times.append(time.perf_counter() - t0)
                row["seconds"] = common.median(times)
                row["mpix_s"] = megapixels / row["seconds"]
            except Exception as e:  # a failing variant is a row, not a crash
                row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def _memory_child(s: Settings, size: int) -> dict[str, Any]:
    import zoo.inference as inf

    model = s.model("float32")
    predictor = inf.TiledPredictor(model, tile=s.memory_tile, overlap=0.25, batch_size=s.batch)
    predictor.predict(np.zeros((s.memory_tile, s.memory_tile, 3), np.uint8))  # compile
    image = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    out = np.empty((size, size, 1), np.float32)
    t0 = time.perf_counter()
    predictor.predict(image, out=out)
    seconds = time.perf_counter() - t0
    peak = rss_high_water_mib()
    arrays = (image.nbytes + out.nbytes) / 2**20
    return {
        "size": size,
        "peak_rss_mib": round(peak, 1),
        "arrays_mib": round(arrays, 1),
        "net_mib": round(peak - arrays, 1),
        "seconds": round(seconds, 2),
    }


def run_memory(s: Settings, argv: list[str]) -> list[dict[str, Any]]:
    rows = []
    for size in s.memory_sizes:
        proc = subprocess.run(
            [*module_command("tiled"), "_memory_child", "--size", str(size), *argv],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=False,
        )
        if proc.returncode:
            rows.append({"size": size, "error": proc.stderr.strip().splitlines()[-1][:300]})
        else:
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def markdown(result: dict[str, Any]) -> str:
    m, st = result["machine"], result["settings"]
    head = (
        f"Tiled inference (`bench/tiled.py`), {st['model']}, one {st['image'][0]}x"
        f"{st['image'][1]} RGB image, batch {st['batch']}, Gaussian blending, probabilities "
        f"out; median of {st['timed_runs']} runs after a compiling one. {m['cpu']} "
        f"({m['logical_cores']} cores), TensorFlow {m['tensorflow']}; load {result['load_start']}"
        f" -> {result['load_end']}; git {m['git_commit']}, {result['date']}.\n\n"
        "| precision | tile | overlap | TTA | tiles | s/image | MP/s |\n"
        "|---|---:|---:|---|---:|---:|---:|"
    )
    lines = [head]
    for r in result.get("throughput", []):
        if "error" in r:
            lines.append(
                f"| {r['precision']} | {r['tile']} | {r['overlap']} | {r['tta']} | "
                f"{r['tiles']} | error: {r['error']} | |"
            )
        else:
            lines.append(
                f"| {r['precision']} | {r['tile']} | {r['overlap']} | {r['tta']} | "
                f"{r['tiles']} | {r['seconds']:.2f} | {r['mpix_s']:.3f} |"
            )
    lines += [
        "",
        f"Peak memory, float32, tile {st['memory_tile']}, overlap 0.25 (fresh process "
        "per size; arrays = uint8 input + float32 output):",
        "",
        "| image | peak RSS (MiB) | arrays (MiB) | peak - arrays (MiB) | s |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in result.get("memory", []):
        if "error" in r:
            lines.append(f"| {r['size']}² | error: {r['error']} | | | |")
        else:
            lines.append(
                f"| {r['size']}² | {r['peak_rss_mib']:.0f} | {r['arrays_mib']:.0f} | "
                f"{r['net_mib']:.0f} | {r['seconds']:.1f} |"
            )
    return "\n".join(lines) + "\n"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=("throughput", "memory", "all", "report", "_memory_child"))
    p.add_argument("result", nargs="?", help="report: the result JSON")
    p.add_argument("--smoke", action="store_true", help="tiny model and image (CI)")
    p.add_argument("--image", type=int, help="throughput image side (default 1536)")
    p.add_argument("--batch", type=int, help="tiles per step (default 8)")
    p.add_argument("--reps", type=int, help="timed runs per variant (default 3)")
    p.add_argument("--precisions", nargs="+", choices=PRECISIONS)
    p.add_argument("--tiles", nargs="+", type=int)
    p.add_argument("--overlaps", nargs="+", type=float)
    p.add_argument("--ttas", nargs="+", choices=TTAS)
    p.add_argument("--memory-sizes", nargs="+", type=int)
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)  # _memory_child
    p.add_argument("--out", help="result JSON (merged into when it exists)")
    p.add_argument("--doc", help="report: markdown file with the bench:tiled markers")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "report":
        if not args.result:
            raise SystemExit("report needs the result JSON path")
        tables = markdown(json.loads(Path(args.result).read_text()))
        print(tables)
        if args.doc:
            update_doc(Path(args.doc), tables, DOC_START, DOC_END)
        return 0
    s = Settings(args)
    if args.command == "_memory_child":
        print(json.dumps(_memory_child(s, args.size)))
        return 0
    out = Path(args.out) if args.out else None
    result: dict[str, Any] = json.loads(out.read_text()) if out and out.exists() else {}
    result.update(
        machine=common.machine_facts(),
        settings=s.as_dict(),
        load_start=common.load_average(),
        date=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    )
    if args.command in ("throughput", "all"):
        result["throughput"] = run_throughput(s)
    if args.command in ("memory", "all"):
        child = ["--smoke"] if s.smoke else []
        if args.batch:
            child += ["--batch", str(args.batch)]
        result["memory"] = run_memory(s, child)
    result["load_end"] = common.load_average()
    text = json.dumps(result, indent=2, sort_keys=True) + "\n"
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
