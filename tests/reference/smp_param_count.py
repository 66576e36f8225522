"""Trainable parameter count of a segmentation_models_pytorch architecture (random init)."""

import numpy as np
import segmentation_models_pytorch as smp
from _protocol import parse

_, options, save = parse()
model = getattr(smp, options["arch"])(
    options.get("encoder", "resnet34"), encoder_weights=None, classes=options.get("classes", 1)
)
count = sum(p.numel() for p in model.parameters() if p.requires_grad)
save(count=np.array(count, np.int64))
