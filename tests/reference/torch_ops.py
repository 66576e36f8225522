"""PyTorch ops on channels-last arrays, for checking the zoo's layers (one process, many cases).

Options: `cases`, a list of {"op": ..., arguments}; case `i` reads input `x{i}` (NHWC,
converted to NCHW and back) and writes `y{i}` (or `y{i}_<name>` for several outputs).
- interpolate: size [h, w], mode, align_corners (omit for nearest)
- adaptive_avg_pool: output_size [h, w]
- max_pool2: floor-mode 2x2 / 2 max pooling
- conv_transpose: inputs `w{i}` (in, out, kh, kw) and `b{i}`; stride, padding
- pab: segmentation_models_pytorch's MAnet PABBlock (random weights, `seed`, `pab_channels`)
  on `x{i}`; writes its query (center_conv), key (top_conv) and value (bottom_conv) outputs
  and the input of its out_conv (x + attention) as `residual`
"""

import numpy as np
import torch
import torch.nn.functional as F
from _protocol import parse

inputs, options, save = parse()


def nchw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a).permute(0, 3, 1, 2).contiguous()


def nhwc(t: torch.Tensor) -> np.ndarray:
    return t.permute(0, 2, 3, 1).detach().numpy()


def run(case: dict, i: int) -> dict:
    x = nchw(inputs[f"x{i}"])
    op = case["op"]
    if op == "interpolate":
        kwargs = {"align_corners": case["align_corners"]} if "align_corners" in case else {}
        return {"": F.interpolate(x, size=tuple(case["size"]), mode=case["mode"], **kwargs)}
    if op == "adaptive_avg_pool":
        return {"": F.adaptive_avg_pool2d(x, tuple(case["output_size"]))}
    if op == "max_pool2":
        return {"": F.max_pool2d(x, 2, 2)}
    if op == "conv_transpose":
        w, b = torch.from_numpy(inputs[f"w{i}"]), torch.from_numpy(inputs[f"b{i}"])
        return {"": F.conv_transpose2d(x, w, b, stride=case["stride"], padding=case["padding"])}
    if op == "pab":
        from segmentation_models_pytorch.decoders.manet.decoder import PABBlock

        torch.manual_seed(case["seed"])
        block = PABBlock(x.shape[1], pab_channels=case["pab_channels"]).eval()
        seen = {}
        for part in ("top_conv", "center_conv", "bottom_conv"):
            getattr(block, part).register_forward_hook(
                lambda m, args, out, part=part: seen.__setitem__(part, out)
            )
        block.out_conv.register_forward_pre_hook(
            lambda m, args: seen.__setitem__("residual", args[0])
        )
        block(x)
        return seen
    raise SystemExit(f"unknown op {op!r}")


outputs = {}
with torch.no_grad():
    for i, case in enumerate(options["cases"]):
        for name, value in run(case, i).items():
            outputs[f"y{i}_{name}" if name else f"y{i}"] = nhwc(value)
save(**outputs)
