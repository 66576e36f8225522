"""segmentation_models_pytorch's losses on channels-last arrays, with gradients.

Options: `cases`, a list of {"loss": "lovasz" | "mcc" | "smp", "mode", and for lovasz
"per_image", "ignore_index", "per_channel"; for smp "cls" (a class of
`segmentation_models_pytorch.losses`) and its "kwargs"}; case `i` reads logits `x{i}` (NHWC)
and the mask `y{i}` (NHW1, or NHWC in multilabel mode) and writes the loss `loss{i}` and its
gradient with respect to the logits `grad{i}` (NHWC).
- lovasz, `per_channel`: smp's binary loss on each channel, averaged (smp's multilabel mode
  pools the channels into one hinge; the zoo's `lovasz` takes one per label).
- mcc: smp's MCCLoss (binary only) on the sigmoid of the logits, its default eps.
- smp: `cls(mode=..., **kwargs)` (no mode for SoftBCEWithLogitsLoss / SoftCrossEntropyLoss),
  given class ids (N, H, W) in multiclass mode, an NCHW mask otherwise (float for SoftBCE).
"""

import numpy as np
import segmentation_models_pytorch.losses as smp_losses
import torch
from _protocol import parse
from segmentation_models_pytorch.losses import LovaszLoss, MCCLoss

inputs, options, save = parse()


def smp_loss(case: dict, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The case's smp loss of logits `x` (NCHW) against `target` (smp's layout)."""
    if case["loss"] == "mcc":
        return MCCLoss()(torch.sigmoid(x), target.float())
    if case["loss"] == "lovasz":
        kwargs = {"per_image": case["per_image"], "ignore_index": case["ignore_index"]}
        if case.get("per_channel"):
            fn = LovaszLoss("binary", **kwargs)
            parts = [fn(x[:, c : c + 1], target[:, c : c + 1]) for c in range(x.shape[1])]
            return torch.stack(parts).mean()
        return LovaszLoss(case["mode"], **kwargs)(x, target)
    kwargs = dict(case["kwargs"])
    if "pos_weight" in kwargs:
        kwargs["pos_weight"] = torch.tensor(kwargs["pos_weight"])
    cls = getattr(smp_losses, case["cls"])
    if case["cls"] == "SoftBCEWithLogitsLoss":
        return cls(**kwargs)(x, target.float())
    if case["cls"] == "SoftCrossEntropyLoss":
        return cls(**kwargs)(x, target)
    return cls(mode=case["mode"], **kwargs)(x, target)


out = {}
for i, case in enumerate(options["cases"]):
    x = torch.from_numpy(inputs[f"x{i}"]).permute(0, 3, 1, 2).contiguous().requires_grad_(True)
    y = torch.from_numpy(inputs[f"y{i}"].astype(np.int64))
    target = y[..., 0] if case["mode"] == "multiclass" else y.permute(0, 3, 1, 2)
    loss = smp_loss(case, x, target)
    loss.backward()
    out[f"loss{i}"] = loss.detach().numpy()
    out[f"grad{i}"] = x.grad.permute(0, 2, 3, 1).numpy()
save(**out)
