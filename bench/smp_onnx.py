"""Export segmentation_models_pytorch models to ONNX: the reference rows of bench/export.py.

Runs in the reference interpreter (torch, smp and onnx installed: the `ref` extra), never in
a process that imported TensorFlow (tensorflow#124205). bench/export.py calls it and times
the files in ONNX Runtime next to our exports:

    /work/venv-ref/bin/python -m bench.smp_onnx --arch Unet --encoder resnet34 \\
        --sizes 256 512 --out-dir /tmp/smp_onnx

Writes `<arch>_<encoder>_<size>.onnx` (batch 1, NCHW float32 input "image", output "logits",
random weights: latency only) and `versions.json`.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="Unet", help="smp architecture class, e.g. Unet, FPN")
    p.add_argument("--encoder", default="resnet34")
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    p.add_argument("--out-dir", required=True)
    args = p.parse_args()

    import segmentation_models_pytorch as smp
    import torch

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = getattr(smp, args.arch)(args.encoder, encoder_weights=None, classes=1).eval()
    files = {}
    for size in args.sizes:
        path = out / f"{args.arch}_{args.encoder}_{size}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(
                model,
                (torch.zeros(1, 3, size, size),),
                str(path),
                dynamo=False,  # the dynamo exporter needs onnxscript, not in the ref extra
                input_names=["image"],
                output_names=["logits"],
                opset_version=17,
            )
        files[size] = str(path)
    versions = {"torch": torch.__version__, "segmentation_models_pytorch": smp.__version__}
    (out / "versions.json").write_text(json.dumps({"versions": versions, "files": files}))


if __name__ == "__main__":
    main()
