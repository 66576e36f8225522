"""SegFormer (mit_b0 / mit_b2), DPT (ViT-S / ViT-B) and U-Net on the bottleneck ResNets
(ResNet-50, ResNeXt-50) against segmentation_models_pytorch's Segformer, DPT and Unet, step
by step.

For every encoder x (size, batch) x precision, one child process builds the zoo model
(`losses.attach(model, "wbce+dice")`, AdamW, the `bench/run.py` training path) and one, in
a PyTorch environment, smp's ``Segformer(encoder, encoder_weights=None, classes=1)`` (BCE +
Dice, AdamW; float32 in channels-last memory format, mixed_bfloat16 as bfloat16 autocast,
as `bench/smp_reference.py`). Both warm up, then the parent asks them for one step in turn
(A B B A ...), training first, then inference, so a change of load hits both alike.
Reported: images/s and the paired median ratio zoo / smp (> 1: the zoo is faster).

    python -m bench.segformer_bench --smp-python /path/to/torch/python \\
        --out bench/results/segformer_vs_smp.json
    python -m bench.segformer_bench --smoke --smp-python ...   # 64x64, batch 2, 1 step
    python -m bench.segformer_bench --model dpt --smp-python ... \\
        --out bench/results/dpt_vs_smp.json   # smp.DPT("tu-vit_*", dynamic_img_size=True)
    python -m bench.segformer_bench --model unet --smp-python ... \
        --out bench/results/bottleneck_vs_smp.json   # smp.Unet("resnet50" / "resnext50_32x4d")

Defaults: encoders mit_b0 mit_b2 (DPT: vit_small_patch16_224 vit_base_patch16_224; U-Net:
resnet50 resnext50_32x4d); cases 512x512 batch 4 and 256x256 batch 8 (DPT: 224x224 batch 4;
U-Net: 256x256 batch 8); float32 and mixed_bfloat16; 6
rounds after 1 warm-up round. `--xla` compiles the zoo side with XLA.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def module_command(name: str, python: str) -> list[str]:
    # Not bench.common's: the PyTorch side runs this file and must not import TensorFlow.
    return [python, "-m", f"bench.{name}"]


PRECISIONS = ("float32", "mixed_bfloat16")
# Our native encoders that smp builds from timm by name ("tu-convnext_tiny"). "efficientnet_"
# (underscore) is timm's efficientnet_b0; efficientnet-b0 and timm-efficientnet-b0 are smp's own.
TIMM_UNIVERSAL = (
    "convnext_", "regnetx_", "regnety_", "mobilenetv3_", "tf_mobilenetv3_", "res2net", "res2next",
    "resnest", "gernet_", "efficientnetv2_", "tf_efficientnetv2_", "efficientnet_",
    "tf_efficientnet_",
)  # fmt: skip
MODELS = ("segformer", "dpt", "unet")
DEFAULTS = {  # model -> (encoders, cases)
    "segformer": (["mit_b0", "mit_b2"], [(512, 4), (256, 8)]),
    "dpt": (["vit_small_patch16_224", "vit_base_patch16_224"], [(224, 4)]),
    "unet": (["resnet50", "resnext50_32x4d"], [(256, 8)]),
}


# --------------------------------------------------------------------------- children


def zoo_child(
    model_name: str, encoder: str, size: int, batch: int, precision: str, xla: bool
) -> None:
    """Build the zoo model, warm up, print READY, then time one step per stdin line."""
    import keras
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    import losses
    import zoo
    from bench.common import LOSS_SPEC, infer_fn, optimizer, synthetic_batch, train_step_fn

    keras.mixed_precision.set_dtype_policy(precision)
    keras.utils.set_random_seed(0)
    try:
        model = zoo.create_model(
            model_name, num_classes=1, input_shape=(size, size, 3), encoder=encoder
        )
        train_model = losses.attach(model, LOSS_SPEC)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    train_model.compile(optimizer=optimizer(), jit_compile=xla)
    data = synthetic_batch(batch, size)
    train, _ = train_step_fn(train_model, data, batch)
    infer = infer_fn(model, data["image"], xla)
    train(), infer()
    info = {"tensorflow": tf.__version__, "keras": keras.__version__}
    _serve({"train": train, "infer": infer}, info)


def smp_child(model_name: str, encoder: str, size: int, batch: int, precision: str) -> None:
    """smp's Segformer, DPT or Unet with the same protocol (runs in the PyTorch environment)."""
    import segmentation_models_pytorch as smp
    import torch

    torch.manual_seed(0)
    bf16 = precision != "float32"
    x = torch.rand(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = (torch.rand(batch, 1, size, size) > 0.5).float()
    dice = smp.losses.DiceLoss("binary", from_logits=True)
    bce = torch.nn.BCEWithLogitsLoss()
    if model_name == "dpt":  # timm's ViT; positions resized for other sizes, as ours
        model = smp.DPT(f"tu-{encoder}", encoder_weights=None, classes=1, dynamic_img_size=True)
    elif model_name == "unet":
        # smp builds timm's ConvNeXt through its timm-universal encoder (tu- prefix).
        name = f"tu-{encoder}" if encoder.startswith(TIMM_UNIVERSAL) else encoder
        model = smp.Unet(name, encoder_weights=None, classes=1)
    else:
        model = smp.Segformer(encoder, encoder_weights=None, classes=1)
    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def train() -> None:
        model.train()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        logits = logits.float()
        (bce(logits, y) + dice(logits, y)).backward()
        opt.step()

    @torch.inference_mode()
    def infer() -> None:
        model.eval()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            model(x)

    train(), infer()
    info = {
        "torch": torch.__version__,
        "segmentation_models_pytorch": smp.__version__,
        "threads": torch.get_num_threads(),
    }
    _serve({"train": train, "infer": infer}, info)


def _serve(fns: dict[str, Any], info: dict[str, Any]) -> None:
    print("READY " + json.dumps(info), flush=True)
    for line in sys.stdin:
        t0 = time.perf_counter()
        fns["train" if line.strip() == "train" else "infer"]()
        print(f"{time.perf_counter() - t0:.6f}", flush=True)


# --------------------------------------------------------------------------- parent


def _spawn(side: str, python: str, model: str, encoder: str, size: int, batch: int,
           precision: str, xla: bool) -> subprocess.Popen:  # fmt: skip
    cmd = [*module_command("segformer_bench", python), "--child", side, "--model", model]
    cmd += ["--encoders", encoder]
    cmd += ["--precisions", precision]
    cmd += ["--cases", f"{size}x{batch}"] + (["--xla"] if xla else [])
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, bufsize=1, cwd=ROOT
    )


def _ready(proc: subprocess.Popen, side: str) -> dict[str, Any]:
    for line in proc.stdout:
        if line.startswith("READY"):
            return json.loads(line[len("READY") :].strip() or "{}")
    raise RuntimeError(f"the {side} child exited before it was ready (rc {proc.wait()})")


def compare(args: argparse.Namespace, encoder: str, size: int, batch: int, precision: str):
    """One row: both sides' images/s and the paired zoo/smp ratios."""
    import numpy as np

    sides = {"zoo": sys.executable}
    if args.smp_python:
        sides["smp"] = args.smp_python
    procs, info = {}, {}
    try:
        for side, python in sides.items():  # one at a time: building is not timed
            procs[side] = _spawn(
                side, python, args.model, encoder, size, batch, precision, args.xla
            )
            info[side] = _ready(procs[side], side)
        times = {s: {"train": [], "infer": []} for s in procs}
        names = list(procs)
        for kind in ("train", "infer"):
            for r in range(args.warmup + args.rounds):
                for side in names if r % 2 == 0 else names[::-1]:
                    time.sleep(args.pause)  # the other side's spinning threads go to sleep
                    procs[side].stdin.write(kind + "\n")
                    dt = float(procs[side].stdout.readline())
                    if r >= args.warmup:
                        times[side][kind].append(dt)
    finally:
        for proc in procs.values():
            if proc.stdin:
                proc.stdin.close()
            proc.wait()
    row: dict[str, Any] = {
        "model": args.model,
        "encoder": encoder,
        "size": size,
        "batch": batch,
        "precision": precision,
        "xla": args.xla,
        "versions": info,
    }
    for kind in ("train", "infer"):
        for side in procs:
            t = np.asarray(times[side][kind])
            row[f"{side}_{kind}_img_s"] = float(batch / np.median(t))
            row[f"{side}_{kind}_times_s"] = [round(float(x), 4) for x in t]
        if "smp" in procs:
            ratio = np.asarray(times["smp"][kind]) / np.asarray(times["zoo"][kind])
            row[f"{kind}_zoo_over_smp"] = float(np.median(ratio))
    return row


def _case(text: str) -> tuple[int, int]:
    size, _, batch = text.partition("x")
    try:
        return int(size), int(batch)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected SIZExBATCH such as 512x4. Received: {text!r}"
        ) from None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=MODELS, default="segformer")
    p.add_argument("--encoders", nargs="+", help="default: see the module docstring")
    p.add_argument("--cases", nargs="+", type=_case,
                   help="SIZExBATCH pairs (default 512x4 256x8; DPT 224x4)")  # fmt: skip
    p.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--pause", type=float, default=0.5, help="seconds of quiet before a step")
    p.add_argument("--xla", action="store_true", help="compile the zoo side with XLA")
    p.add_argument("--smp-python", help="a Python with torch and segmentation_models_pytorch")
    p.add_argument("--smoke", action="store_true",
                   help="mit_b0 (DPT: vit_tiny_patch16_224), 64x64 batch 2, 1 round")  # fmt: skip
    p.add_argument("--out", help="result JSON")
    p.add_argument("--child", choices=("zoo", "smp"), help=argparse.SUPPRESS)
    args = p.parse_args()
    encoders, cases = DEFAULTS[args.model]
    args.encoders, args.cases = args.encoders or encoders, args.cases or cases
    if args.child:
        (size, batch), precision = args.cases[0], args.precisions[0]
        if args.child == "zoo":
            zoo_child(args.model, args.encoders[0], size, batch, precision, args.xla)
        else:
            smp_child(args.model, args.encoders[0], size, batch, precision)
        return 0
    if args.smoke:
        smoke = {"dpt": "vit_tiny_patch16_224", "unet": "resnext50_32x4d"}.get(args.model, "mit_b0")
        args.encoders, args.cases, args.rounds, args.warmup = [smoke], [(64, 2)], 1, 0
        args.pause = 0.0
    load_start = [round(x, 2) for x in os.getloadavg()]
    rows = []
    for encoder in args.encoders:
        for size, batch in args.cases:
            for precision in args.precisions:
                text = f"{encoder} {size}x{size} b{batch} {precision:<14}"
                try:
                    row = compare(args, encoder, size, batch, precision)
                except RuntimeError as error:  # a side crashed: record it, measure the rest
                    case = {"model": args.model, "encoder": encoder, "size": size}
                    rows.append({**case, "batch": batch, "precision": precision,
                                 "error": str(error)})  # fmt: skip
                    print(f"{text} {error}", flush=True)
                    _write(args, load_start, rows)
                    continue
                rows.append(row)
                for kind in ("train", "infer"):
                    text += f" {kind} zoo {row[f'zoo_{kind}_img_s']:6.2f} img/s"
                    if "smp_train_img_s" in row:
                        text += (
                            f" smp {row[f'smp_{kind}_img_s']:6.2f}"
                            f" (x{row[f'{kind}_zoo_over_smp']:.2f})"
                        )
                print(text, flush=True)
                _write(args, load_start, rows)  # after every row: a later crash keeps these
    return 0


def _write(args: argparse.Namespace, load_start: list[float], rows: list[dict]) -> None:
    result = {
        "rounds": args.rounds,
        "warmup": args.warmup,
        "pause_s": args.pause,
        "smoke": args.smoke,
        "load_start": load_start,
        "load_end": [round(x, 2) for x in os.getloadavg()],
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "rows": rows,
    }
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        from bench.common import write_json

        write_json(Path(args.out), result)


if __name__ == "__main__":
    sys.exit(main())
