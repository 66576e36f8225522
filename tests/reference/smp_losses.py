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
out = {}
for i, case in enumerate(options["cases"]):
    x = torch.from_numpy(inputs[f"x{i}"]).permute(0, 3, 1, 2).contiguous().requires_grad_(True)
    y = torch.from_numpy(inputs[f"y{i}"].astype(np.int64))
    if case["loss"] == "smp":
        kwargs = dict(case["kwargs"])
        if "pos_weight" in kwargs:
            kwargs["pos_weight"] = torch.tensor(kwargs["pos_weight"])
        cls = getattr(smp_losses, case["cls"])
        if case["cls"] in ("SoftBCEWithLogitsLoss", "SoftCrossEntropyLoss"):
            loss_fn = cls(**kwargs)
        else:
            loss_fn = cls(mode=case["mode"], **kwargs)
        if case["mode"] == "multiclass":
            target = y[..., 0]
        else:
            target = y.permute(0, 3, 1, 2)
            if case["cls"] == "SoftBCEWithLogitsLoss":
                target = target.float()
        loss = loss_fn(x, target)
    elif case["loss"] == "mcc":
        loss = MCCLoss()(torch.sigmoid(x), y.permute(0, 3, 1, 2).float())
    elif case["mode"] == "multiclass":
        kwargs = {"per_image": case["per_image"], "ignore_index": case["ignore_index"]}
        loss = LovaszLoss("multiclass", **kwargs)(x, y[..., 0])
    elif case.get("per_channel"):
        kwargs = {"per_image": case["per_image"], "ignore_index": case["ignore_index"]}
        y = y.permute(0, 3, 1, 2)
        parts = [
            LovaszLoss("binary", **kwargs)(x[:, c : c + 1], y[:, c : c + 1])
            for c in range(x.shape[1])
        ]
        loss = torch.stack(parts).mean()
    else:
        kwargs = {"per_image": case["per_image"], "ignore_index": case["ignore_index"]}
        loss = LovaszLoss(case["mode"], **kwargs)(x, y.permute(0, 3, 1, 2))
    loss.backward()
    out[f"loss{i}"] = loss.detach().numpy()
    out[f"grad{i}"] = x.grad.permute(0, 2, 3, 1).numpy()
save(**out)
