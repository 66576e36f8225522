"""Trainable parameter counts of segmentation_models_pytorch architectures (random init).

Option `models`: a list of requests, all answered in this one interpreter (its start-up, torch
and smp, costs more than building most models); without it the options are one request.
Each request: `arch`, `encoder` (default resnet34), `classes` (default 1); with `used_only`,
only the parameters that get a gradient from a forward and backward pass, i.e. lie on the
input -> output path (smp's PSPNet builds encoder stages it never runs, which a Keras
functional graph leaves out; its DPT, a timm ViT's final norm and classifier); `size`: that
pass's image size (default 128; a ViT without dynamic_img_size needs its own, 224).

Saves `counts` (one per request, in order) and, for a single request, `count`.
"""

import numpy as np
import segmentation_models_pytorch as smp
import torch
from _protocol import parse


def count(arch: str, encoder: str = "resnet34", classes: int = 1, used_only=False, size=128):
    model = getattr(smp, arch)(encoder, encoder_weights=None, classes=classes)
    params = [p for p in model.parameters() if p.requires_grad]
    if used_only:
        model.train()
        torch.manual_seed(0)
        # 128x128: smp's PAN needs its stride-16 map to be at least 8x8.
        model(torch.randn(2, 3, size, size)).sum().backward()
        params = [p for p in params if p.grad is not None]
    return sum(p.numel() for p in params)


_, options, save = parse()
requests = options.get("models") or [options]
counts = np.array([count(**request) for request in requests], np.int64)
save(counts=counts, **({"count": counts[0]} if "models" not in options else {}))
