"""Where a training step's time goes, for one model: TF's profiler by op type, and oneDNN's
own log of every convolution with its achieved GFLOP/s.

    python -m bench.profile_step --model unet --out bench/results/profile_cpu.json
    python -m bench.profile_step --inter-op 1     # one op at a time (see below)
    python -m bench.profile_step --smoke          # tiny model, 64x64 (what the tests run)
    python -m bench.profile_step --table a.json b.json   # one markdown row per profile

The step is `python -m bench.run`'s: `losses.attach(model, "wbce+dice")`, AdamW, a fixed batch
from memory, warmed up. Two measurements of it:

1. **TF profiler** (`tf.profiler.experimental`): op time summed per op type over the
   executor threads, and the step's wall time. With TF's default inter-op pool two ops can
   run at once on the same cores, each then looking twice as slow; `--inter-op 1` runs one
   op at a time, so op times add up to the step and per-op speeds are the kernels' own.
2. **oneDNN verbose log** (a child process with ``ONEDNN_VERBOSE=1``): execution time of
   every oneDNN primitive in one step, convolutions grouped by kind (forward, backward
   data, backward weights) with their FLOPs from the logged shapes, so each kind's GFLOP/s
   can be held against the machine's matmul peak (`python -m bench.run flops`).

Writes JSON with machine facts; prints tables. Nothing here is asserted by a test except
that the smoke mode runs and finds convolutions.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MARK_START, MARK_END = "=====PROFILE-STEP-START=====", "=====PROFILE-STEP-END====="


def _settings(args: argparse.Namespace) -> Any:
    from bench import common

    ns = argparse.Namespace(
        smoke=args.smoke,
        size=args.size,
        batch=args.batch,
        warmup=None,
        steps=None,
        precisions=[args.precision],
        xla="off",
        steps_per_execution=1,
        models=[args.model],
    )
    return common.Settings(ns)


def _configure_threads(args: argparse.Namespace) -> None:
    import tensorflow as tf  # before anything starts TF's runtime

    if args.inter_op:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter_op)


def _warm_step(args: argparse.Namespace) -> Any:
    """The warmed-up training step of `python -m bench.run` for `args.model`."""
    from bench import common

    s = _settings(args)
    _, train_model = common.attached_train_model(args.model, s, args.precision, False)
    data = common.synthetic_batch(s.batch, s.size, s.classes)
    step, _ = common.train_step_fn(train_model, data, s.batch)
    for _ in range(2):
        step()
    return step, s


# --------------------------------------------------------------------------- TF profiler


def tf_profile(args: argparse.Namespace) -> dict[str, Any]:
    """Op time per op type (ms per step, summed over executor threads) and step wall time."""
    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    step, s = _warm_step(args)
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step()
        wall = (time.perf_counter() - t0) / args.steps
        tf.profiler.experimental.stop()
        (path,) = glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True)
        space = xplane_pb2.XSpace()
        space.ParseFromString(Path(path).read_bytes())
    by_type: collections.Counter[str] = collections.Counter()
    for plane in space.planes:
        if "host" not in plane.name.lower():
            continue
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):  # executor threads run the ops
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if ":" not in name or name.startswith("ExecutorState"):
                    continue  # TF op events are "op_name:OpType"
                by_type[name.rsplit(":", 1)[1]] += event.duration_ps / 1e9 / args.steps
    return {
        "step_ms": 1000 * wall,
        "op_ms_total": sum(by_type.values()),
        "op_ms_by_type": dict(by_type.most_common()),
        "size": s.size,
        "batch": s.batch,
    }


# --------------------------------------------------------------------------- oneDNN log


def conv_flops(desc: str) -> int:
    """FLOPs (2 per multiply-add) of a oneDNN convolution from its logged problem descriptor,
    e.g. ``mb8_ic64oc64_ih64oh64kh3sh1dh0ph1_iw64ow64kw3sw1dw0pw1`` (``g`` = groups)."""
    d = {k: int(v) for k, v in re.findall(r"([a-z]+)(\d+)", desc)}
    groups = d.get("g", 1)
    return 2 * d["mb"] * d["oc"] * d["oh"] * d["ow"] * d["kh"] * d["kw"] * d["ic"] // groups


def parse_onednn_log(lines: list[str]) -> dict[str, Any]:
    """Group `onednn_verbose` exec lines by (primitive, kind); FLOPs for convolutions."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for line in lines:
        if not line.startswith("onednn_verbose,") or ",primitive,exec," not in line:
            continue
        f = line.strip().split(",")
        prim, impl, kind, desc, ms = f[5], f[6], f[7], f[-2], float(f[-1])
        g = groups.setdefault(
            (prim, kind),
            {"primitive": prim, "kind": kind, "ms": 0.0, "calls": 0, "gflop": 0.0, "impls": {}},
        )
        g["ms"] += ms
        g["calls"] += 1
        g["impls"][impl] = g["impls"].get(impl, 0) + 1
        if prim == "convolution":
            g["gflop"] += conv_flops(desc) / 1e9
    rows = sorted(groups.values(), key=lambda g: -g["ms"])
    for g in rows:
        g["gflop_s"] = g["gflop"] / (g["ms"] / 1000) if g["gflop"] else None
    return {"total_ms": sum(g["ms"] for g in rows), "by_kind": rows}


def _verbose_child(args: argparse.Namespace) -> None:
    step, _ = _warm_step(args)
    print(MARK_START, flush=True)
    t0 = time.perf_counter()
    step()
    print(f"{MARK_END} {1000 * (time.perf_counter() - t0):.3f}", flush=True)


def onednn_profile(args: argparse.Namespace) -> dict[str, Any]:
    from bench.common import ROOT, module_command

    cmd = [*module_command("profile_step"), "--verbose-child", *_forward_args(args)]
    env = {**os.environ, "ONEDNN_VERBOSE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, cwd=ROOT)
    out = proc.stdout.splitlines()
    starts = [i for i, x in enumerate(out) if x.startswith(MARK_START)]
    ends = [i for i, x in enumerate(out) if x.startswith(MARK_END)]
    if proc.returncode != 0 or not starts or not ends:
        tail = proc.stderr[-2000:]
        raise RuntimeError(f"oneDNN verbose run failed (rc {proc.returncode}): {tail}")
    result = parse_onednn_log(out[starts[0] + 1 : ends[0]])
    result["step_ms"] = float(out[ends[0]].split()[-1])
    return result


def _forward_args(args: argparse.Namespace) -> list[str]:
    argv = ["--model", args.model, "--precision", args.precision, "--inter-op", str(args.inter_op)]
    argv += ["--size", str(args.size)] if args.size else []
    argv += ["--batch", str(args.batch)] if args.batch else []
    return argv + (["--smoke"] if args.smoke else [])


# --------------------------------------------------------------------------- report


def report(result: dict[str, Any]) -> str:
    tfp, dnn = result["tf_profile"], result["onednn"]
    lines = [
        f"{result['model']} {result['precision']}, {tfp['size']}x{tfp['size']} batch "
        f"{tfp['batch']}, inter-op threads {result['inter_op'] or 'default'}",
        f"TF profiler: step {tfp['step_ms']:.0f} ms, op time {tfp['op_ms_total']:.0f} ms "
        "(summed over threads)",
    ]
    total = tfp["op_ms_total"] or 1.0
    for typ, ms in list(tfp["op_ms_by_type"].items())[:15]:
        lines.append(f"  {typ:<36} {ms:8.1f} ms {100 * ms / total:5.1f}%")
    lines.append(
        f"oneDNN: step {dnn['step_ms']:.0f} ms (verbose run), primitives {dnn['total_ms']:.0f} ms"
    )
    for g in dnn["by_kind"]:
        rate = f"{g['gflop_s']:7.1f} GFLOP/s" if g["gflop_s"] else ""
        lines.append(
            f"  {g['primitive']:<20} {g['kind']:<17} {g['ms']:8.1f} ms {g['calls']:4d} calls {rate}"
        )
    return "\n".join(lines)


CONV_KINDS = ("forward_training", "backward_data", "backward_weights")


def table_row(result: dict[str, Any], others: int = 3) -> str:
    """One markdown row of a profile: step time, each convolution kind's time and GFLOP/s
    (oneDNN log), the convolutions' share of the step, and the largest non-convolution op
    types of the TF profiler."""
    tfp, dnn = result["tf_profile"], result["onednn"]
    cells = [result["model"], result["precision"], f"{tfp['step_ms']:.0f}"]
    conv_ms = 0.0
    for kind in CONV_KINDS:
        g = next(
            (g for g in dnn["by_kind"] if g["primitive"] == "convolution" and g["kind"] == kind),
            None,
        )
        conv_ms += g["ms"] if g else 0.0
        cells.append(f"{g['ms']:.0f} ({g['gflop_s']:.0f})" if g and g["gflop_s"] else "-")
    cells.append(f"{100 * conv_ms / dnn['step_ms']:.0f}%")
    rest = [(t, ms) for t, ms in tfp["op_ms_by_type"].items() if "Conv2D" not in t]
    rest.sort(key=lambda item: -item[1])
    cells.append(
        ", ".join(
            f"{t.removeprefix('_Mkl').removeprefix('Native')} {ms:.0f}" for t, ms in rest[:others]
        )
    )
    return "| " + " | ".join(cells) + " |"


def table(results: list[dict[str, Any]]) -> str:
    """Markdown table of several profiles (`--table`)."""
    head = (
        "| model | precision | step ms | conv fwd ms (GFLOP/s) | bwd data | bwd weights "
        "| conv share | largest other ops (ms) |"
    )
    return "\n".join([head, "|---|---|---:|---:|---:|---:|---:|---|", *map(table_row, results)])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="unet")
    p.add_argument("--precision", default="float32", choices=("float32", "mixed_bfloat16"))
    p.add_argument("--size", type=int, default=None, help="default 256 (smoke: 64)")
    p.add_argument("--batch", type=int, default=None, help="default 8 (smoke: 2)")
    p.add_argument("--steps", type=int, default=3, help="profiled steps (TF profiler)")
    p.add_argument("--inter-op", type=int, default=0, help="0 = TF's default pool")
    p.add_argument("--smoke", action="store_true", help="tiny model, 64x64, batch 2")
    p.add_argument("--out", help="write the JSON here")
    p.add_argument("--table", nargs="+", metavar="JSON", help="print a table of saved profiles")
    p.add_argument("--verbose-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.table:
        print(table([json.loads(Path(f).read_text()) for f in args.table]))
        return 0
    _configure_threads(args)
    if args.verbose_child:
        _verbose_child(args)
        return 0
    import zoo
    from bench import common

    if args.model not in zoo.list_models():
        raise SystemExit(f"unknown model {args.model!r}; choices: {zoo.list_models()}")
    result = {
        "model": args.model,
        "precision": args.precision,
        "inter_op": args.inter_op,
        "machine": common.machine_facts(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "load_start": common.load_average(),
        "onednn": onednn_profile(args),  # first: the child runs while this process is idle
        "tf_profile": tf_profile(args),
        "load_end": common.load_average(),
    }
    print(report(result))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        common.write_json(Path(args.out), result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
