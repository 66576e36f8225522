"""segmentation_models_pytorch's metrics (get_stats, iou_score, f1_score) on channels-last arrays.

Options: `cases`, a list of {"mode", "num_classes", "ignore_index", "skip_first"}; case `i`
reads logits `x{i}` (NHWC) and the mask `y{i}` (NHW1, or NHWC in multilabel mode) and writes
`iou{i}` and `f1{i}`: binary mode "micro" over the sigmoid > 0.5 foreground, multiclass and
multilabel "macro" (each class's counts summed over the images, scores averaged over the
classes; `skip_first`: over the classes after the first) on the arg-max / sigmoid > 0.5.
"""

import numpy as np
import segmentation_models_pytorch as smp
import torch
from _protocol import parse

inputs, options, save = parse()
out = {}
for i, case in enumerate(options["cases"]):
    x = torch.from_numpy(inputs[f"x{i}"]).permute(0, 3, 1, 2)
    y = torch.from_numpy(inputs[f"y{i}"].astype(np.int64))
    if case["mode"] == "multiclass":
        stats = smp.metrics.get_stats(
            x.argmax(1),
            y[..., 0],
            mode="multiclass",
            num_classes=case["num_classes"],
            ignore_index=case.get("ignore_index"),
        )
        reduction = "macro"
    else:
        stats = smp.metrics.get_stats(
            torch.sigmoid(x), y.permute(0, 3, 1, 2), mode=case["mode"], threshold=0.5
        )
        reduction = "micro" if case["mode"] == "binary" else "macro"
    if case.get("skip_first"):
        stats = [s[:, 1:] for s in stats]
    out[f"iou{i}"] = smp.metrics.iou_score(*stats, reduction=reduction).numpy()
    out[f"f1{i}"] = smp.metrics.f1_score(*stats, reduction=reduction).numpy()
save(**out)
