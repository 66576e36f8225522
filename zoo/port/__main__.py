"""``python -m zoo.port smp|transformers --checkpoint FILE --out MODEL.keras``.

Ports a segmentation_models_pytorch checkpoint (`zoo.port.smp`) or a Hugging Face
transformers SegFormer (`zoo.port.hf`) into a `.keras` file. Errors caused by the input are one line
on stderr (exit status 1); an existing output is replaced only with ``--overwrite``.
"""

from __future__ import annotations

import argparse
import os
import sys


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="state dict (.pth/.pt/.bin/.safetensors)")
    p.add_argument("--out", required=True, help="the .keras file to write")
    p.add_argument("--num-classes", type=int, default=None, help="checked against the weights")
    p.add_argument(
        "--normalization",
        choices=["imagenet", "encoder", "none"],
        default=None,
        help=(
            "normalize [0, 1] inputs inside the model with ImageNet's statistics or those of "
            "the encoder's pretrained weights (default: imagenet for 3 channels)"
        ),
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m zoo.port", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    smp = sub.add_parser("smp", help="port a segmentation_models_pytorch model")
    smp.add_argument(
        "--model", required=True, help="architecture: unet, fpn, segformer, upernet, ..."
    )
    smp.add_argument(
        "--encoder", default="resnet34", help="smp encoder name (default resnet34; mit_b0, ...)"
    )
    smp.add_argument(
        "--smp-arg",
        action="append",
        metavar="NAME=VALUE",
        help="an smp constructor argument the weights do not tell, in smp's name (repeatable), "
        "e.g. encoder_output_stride=8 or 'decoder_atrous_rates=[6, 12, 18]'",
    )
    _common(smp)
    hf = sub.add_parser("transformers", help="port a Hugging Face SegformerForSemanticSegmentation")
    _common(hf)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from zoo.errors import UserError

    if args.command == "smp":
        from zoo.port.smp import main as port
    else:
        from zoo.port.hf import main as port

    try:
        print(port(args))
    except UserError as err:
        print(f"Error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
