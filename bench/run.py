"""Benchmarks: throughput, FLOPs and efficiency, loss-wrapper overhead, input pipeline, memory.

Every subcommand prints a table and writes one JSON file (merged into `--out` when it exists)
that carries the machine facts (CPU, cores, versions, threads, load average at start and end).
Step times are medians over timed steps after warm-up; variants that are compared run
interleaved (A B B A ...) in one process, so a load change on the machine hits both alike.

    python -m bench.run all --out bench/results/cpu.json          # the full run (~15 min, 2 cores)
    python -m bench.run throughput --models unet --xla off        # one part
    python -m bench.run report bench/results/cpu.json --doc docs/benchmarks.md
    python -m bench.run all --smoke --out /tmp/smoke.json         # tiny models, 1-2 steps (CI)

See docs/benchmarks.md for the method and the numbers of this project's CI machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import (
    PRECISIONS,
    Settings,
    load_average,
    machine_facts,
    write_json,
)
from bench.pipeline import _memory_child, run_memory, run_overhead, run_pipeline
from bench.report import head_to_head_markdown, markdown, reference_markdown, update_doc
from bench.speed import run_flops, run_throughput

SUBCOMMANDS = ("throughput", "flops", "overhead", "pipeline", "memory")

# --------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=(*SUBCOMMANDS, "all", "report", "_memory_child"))
    p.add_argument("result", nargs="?", help="report: the result JSON to turn into tables")
    p.add_argument("--smoke", action="store_true", help="tiny models, 1-2 steps (CI)")
    p.add_argument("--models", nargs="+", help="registered names (default: all; smoke: unet)")
    p.add_argument("--precisions", nargs="+", choices=PRECISIONS)
    p.add_argument("--xla", choices=("off", "on", "both"), help="default both (smoke: off)")
    p.add_argument("--size", type=int, help="input height = width (default 256; smoke 64)")
    p.add_argument("--batch", type=int, help="batch size (default 8; smoke 2)")
    p.add_argument("--steps", type=int, help="timed steps per variant (default 6; smoke 1)")
    p.add_argument("--warmup", type=int, help="untimed steps per variant (default 2; smoke 1)")
    p.add_argument("--steps-per-execution", type=int, default=1)
    p.add_argument("--intra-op-threads", type=int, default=0, help="0 = TF default")
    p.add_argument("--inter-op-threads", type=int, default=0, help="0 = TF default")
    p.add_argument("--out", help="result JSON (merged into when it exists)")
    p.add_argument("--doc", help="report: markdown file whose bench markers get the tables")
    p.add_argument("--reference", help="report: bench/smp_reference.py's JSON to compare with")
    p.add_argument(
        "--head-to-head", help="report: JSON of `bench/tune.py --variants default smp` runs"
    )
    return p


def _common_argv(args: argparse.Namespace) -> list[str]:
    """Options a memory child process inherits."""
    out = []
    if args.smoke:
        out.append("--smoke")
    for flag, value in (
        ("--size", args.size),
        ("--batch", args.batch),
        ("--steps", args.steps),
        ("--warmup", args.warmup),
        ("--intra-op-threads", args.intra_op_threads or None),
        ("--inter-op-threads", args.inter_op_threads or None),
    ):
        if value is not None:
            out += [flag, str(value)]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "report":
        if not args.result:
            raise SystemExit("report needs the result JSON path")
        result = json.loads(Path(args.result).read_text())
        tables = markdown(result)
        if args.reference:
            tables += "\n" + reference_markdown(
                result, json.loads(Path(args.reference).read_text())
            )
        if args.head_to_head:
            tables += "\n" + head_to_head_markdown(json.loads(Path(args.head_to_head).read_text()))
        print(tables)
        if args.doc:
            update_doc(Path(args.doc), tables)
        return 0

    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # retracing notices: each variant traces on purpose
    # Thread pools can only be sized before TensorFlow runs its first op.
    if args.intra_op_threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.intra_op_threads)
    if args.inter_op_threads:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter_op_threads)
    s = Settings(args)

    if args.command == "_memory_child":
        precision = (args.precisions or ["float32"])[0]
        print(json.dumps(_memory_child(s.model_names()[0], s, precision)))
        return 0

    out = Path(args.out) if args.out else None
    result: dict[str, Any] = {}
    if out is not None and out.exists():
        result = json.loads(out.read_text())
    result.update(
        machine=machine_facts(),
        settings=s.as_dict(),
        load_start=load_average(),
        date=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    )
    commands = SUBCOMMANDS if args.command == "all" else (args.command,)
    t0 = time.perf_counter()
    for cmd in commands:
        print(f"== {cmd} (load {load_average()})", flush=True)
        t_part = time.perf_counter()
        if cmd == "throughput":
            # Rows of other models/variants from an earlier run of the same file are kept.
            new = run_throughput(s)
            keys = {(r["model"], r["precision"], r["xla"]) for r in new["rows"]}
            kept = [
                r
                for r in result.get("throughput", {}).get("rows", [])
                if (r["model"], r["precision"], r["xla"]) not in keys
            ]
            rows = sorted(kept + new["rows"], key=lambda r: (r["model"], r["precision"], r["xla"]))
            result["throughput"] = {"rows": rows}
        elif cmd == "flops":
            result["flops"] = run_flops(s, result.get("throughput"))
        elif cmd == "overhead":
            result["overhead"] = run_overhead(s)
        elif cmd == "pipeline":
            result["pipeline"] = run_pipeline(s, result.get("throughput"))
        elif cmd == "memory":
            result["memory"] = run_memory(s, _common_argv(args))
        result.setdefault("load_by_part", {})[cmd] = load_average()
        result.setdefault("wall_s_by_part", {})[cmd] = round(time.perf_counter() - t_part, 1)
    result["load_end"] = load_average()
    result["wall_s"] = time.perf_counter() - t0
    print(f"== done in {result['wall_s']:.0f} s, load {result['load_end']}")
    if out is not None:
        write_json(out, result)
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
