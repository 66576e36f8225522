"""Trainable parameter count of a segmentation_models_pytorch architecture (random init).

Returns `count`, every trainable parameter; with option `used_only`, only those that get a
gradient from a forward and backward pass, i.e. lie on the input -> output path (smp's PSPNet
builds encoder stages it never runs, which a Keras functional graph leaves out; its DPT, a timm
ViT's final norm and classifier). Option `size`: that pass's image size (default 128; a ViT
without dynamic_img_size needs its own, 224).
"""

import numpy as np
import segmentation_models_pytorch as smp
import torch
from _protocol import parse

_, options, save = parse()
model = getattr(smp, options["arch"])(
    options.get("encoder", "resnet34"), encoder_weights=None, classes=options.get("classes", 1)
)
params = [p for p in model.parameters() if p.requires_grad]
if options.get("used_only"):
    model.train()
    torch.manual_seed(0)
    # 128x128: smp's PAN needs its stride-16 map to be at least 8x8.
    size = options.get("size", 128)
    model(torch.randn(2, 3, size, size)).sum().backward()
    params = [p for p in params if p.grad is not None]
save(count=np.array(sum(p.numel() for p in params), np.int64))
