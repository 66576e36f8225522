"""The PyTorch reference: a segmentation_models_pytorch model (`--arch`, default Unet, ResNet-34,
default arguments) on CPU, same setting as `bench/run.py throughput` (256x256, batch 8, 1
class, BCE + Dice, AdamW).

Runs only where `torch` and `segmentation_models_pytorch` are installed; neither is a project
dependency. Use a separate virtual environment:

    python -m venv /tmp/smp && /tmp/smp/bin/pip install torch segmentation-models-pytorch
    /tmp/smp/bin/python -m bench.smp_reference --out bench/results/smp_reference.json
    /tmp/smp/bin/python -m bench.smp_reference --arch UPerNet --out /tmp/upernet.json

Float32 runs in channels-last memory format (faster on CPU); bfloat16 uses
`torch.autocast("cpu", dtype=torch.bfloat16)`. Medians of `--steps` steps after warm-up,
the two precisions interleaved.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any


def matmul_peak(torch: Any, dtype: Any, n: int = 4096, reps: int = 5) -> float:
    """Median FLOP/s of an n x n `torch.matmul` (the PyTorch side of bench/run.py's peak)."""
    a = torch.rand(n, n).to(dtype)
    b = torch.rand(n, n).to(dtype)
    torch.matmul(a, b)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.matmul(a, b)
        times.append(time.perf_counter() - t0)
    return 2.0 * n**3 / sorted(times)[reps // 2]


def build(
    torch: Any,
    smp: Any,
    size: int,
    batch: int,
    bfloat16: bool,
    arch: str = "Unet",
    encoder: str = "resnet34",
) -> dict[str, Any]:
    """smp `arch`(`encoder`) with a fixed batch: {"train": step, "infer": forward} callables."""
    x = torch.rand(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = (torch.rand(batch, 1, size, size) > 0.5).float()
    dice = smp.losses.DiceLoss("binary", from_logits=True)
    bce = torch.nn.BCEWithLogitsLoss()
    model = getattr(smp, arch)(encoder, encoder_weights=None, classes=1)
    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def train() -> None:
        model.train()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bfloat16):
            logits = model(x)
        logits = logits.float()
        loss = bce(logits, y) + dice(logits, y)
        loss.backward()
        opt.step()

    @torch.inference_mode()
    def infer() -> None:
        model.eval()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bfloat16):
            model(x)

    return {"train": train, "infer": infer}


def child(precision: str, size: int, batch: int, arch: str, encoder: str) -> None:
    """`bench/tune.py`'s child protocol: build, warm up, print READY, then run one step per
    stdin line ("train" / "infer") and print its seconds. Lets tune.py interleave smp with
    the zoo step by step (`--smp-python`)."""
    import segmentation_models_pytorch as smp
    import torch

    torch.manual_seed(0)
    fns = build(torch, smp, size, batch, precision != "float32", arch, encoder)
    fns["train"](), fns["infer"]()
    versions = {"torch": torch.__version__, "segmentation_models_pytorch": smp.__version__}
    print("READY " + json.dumps({**versions, "threads": torch.get_num_threads()}), flush=True)
    for line in sys.stdin:
        t0 = time.perf_counter()
        fns["train" if line.strip() == "train" else "infer"]()
        print(f"{time.perf_counter() - t0:.6f}", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="Unet", help="smp architecture class, e.g. UPerNet")
    p.add_argument("--encoder", default="resnet34")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--out")
    p.add_argument("--child", choices=("float32", "mixed_bfloat16"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child, args.size, args.batch, args.arch, args.encoder)
        return 0
    try:
        import segmentation_models_pytorch as smp
        import torch
    except ImportError as e:
        print(f"skipped: {e} (install torch and segmentation-models-pytorch to run this)")
        return 0
    import numpy as np

    torch.manual_seed(0)
    load_start = [round(x, 2) for x in os.getloadavg()]

    def make(bfloat16: bool) -> dict[str, Any]:
        return build(torch, smp, args.size, args.batch, bfloat16, args.arch, args.encoder)

    variants = {"float32": make(False), "bfloat16_autocast": make(True)}
    times: dict[str, dict[str, list[float]]] = {v: {"train": [], "infer": []} for v in variants}
    names = list(variants)
    for kind in ("train", "infer"):
        steps = args.steps * (3 if kind == "infer" else 1)  # as bench/run.py
        for r in range(args.warmup + steps):
            for v in names if r % 2 == 0 else names[::-1]:
                t0 = time.perf_counter()
                variants[v][kind]()
                if r >= args.warmup:
                    times[v][kind].append(time.perf_counter() - t0)
    rows = []
    for v in names:
        row = {
            "precision": v,
            "train_img_s": args.batch / float(np.median(times[v]["train"])),
            "infer_img_s": args.batch / float(np.median(times[v]["infer"])),
            "train_times_s": [round(t, 4) for t in times[v]["train"]],
            "infer_times_s": [round(t, 4) for t in times[v]["infer"]],
        }
        rows.append(row)
        print(
            f"smp {args.arch}({args.encoder}) {v:<18} train {row['train_img_s']:6.2f} img/s   "
            f"infer {row['infer_img_s']:6.2f} img/s"
        )
    peak = {str(d).split(".")[-1]: matmul_peak(torch, d) for d in (torch.float32, torch.bfloat16)}
    for dtype, flops in peak.items():
        print(f"torch.matmul 4096x4096 {dtype:<10} {flops / 1e9:6.1f} GFLOP/s")
    result = {
        "torch": torch.__version__,
        "segmentation_models_pytorch": smp.__version__,
        "arch": args.arch,
        "encoder": args.encoder,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "size": args.size,
        "batch": args.batch,
        "steps": args.steps,
        "load_start": load_start,
        "load_end": [round(x, 2) for x in os.getloadavg()],
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "rows": rows,
        "matmul_peak_flops_per_s": peak,
    }
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
