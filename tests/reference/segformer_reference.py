"""Random-init SegFormer reference models (smp and transformers) and their outputs.

Options: ``layouts`` (any of "smp", "transformers", "transformers_encoder"), ``encoder``
(mit_b0 ... mit_b5), ``classes``, ``out_dir`` (where ``<layout>.safetensors`` is written, in
the layout the published files use), ``normalize`` (the layouts that see ImageNet-normalized
images, as the published weights expect: the zoo model then normalizes inside) and ``seed``.
Inputs: ``image`` (B, H, W, 3) float32 in [0, 1]. Outputs per layout: ``<layout>_feat<s>``
(stage outputs, NHWC, s = 4, 8, 16, 32) and ``<layout>_logits`` (NHWC: input size for smp,
stride 4 for transformers).
"""

import os
import tempfile

import numpy as np
import torch
from _protocol import parse
from safetensors.torch import save_file

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
DIMS = {"mit_b0": [32, 64, 160, 256]}
DEPTHS = {
    "mit_b0": [2, 2, 2, 2],
    "mit_b1": [2, 2, 2, 2],
    "mit_b2": [3, 4, 6, 3],
    "mit_b3": [3, 4, 18, 3],
    "mit_b4": [3, 8, 27, 3],
    "mit_b5": [3, 6, 40, 3],
}


def randomize(model: torch.nn.Module) -> None:
    """Non-trivial values where initializations are constant (norm scales/offsets, biases,
    batch-norm statistics), so that a swapped or missed tensor shows in the outputs."""
    with torch.no_grad():
        for _, p in model.named_parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.1 * torch.randn_like(b))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand_like(b))


def nhwc(t: torch.Tensor) -> np.ndarray:
    return t.detach().permute(0, 2, 3, 1).numpy()


inputs, options, save = parse()
torch.manual_seed(options.get("seed", 0))
encoder = options.get("encoder", "mit_b0")
classes = options.get("classes", 1)
raw = torch.from_numpy(inputs["image"]).permute(0, 3, 1, 2).contiguous()
normalized = (raw - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
out = {}
for layout in options["layouts"]:
    image = normalized if layout in options.get("normalize", ()) else raw
    path = os.path.join(options["out_dir"], f"{layout}.safetensors")
    if layout == "smp":
        import segmentation_models_pytorch as smp

        model = smp.Segformer(encoder, encoder_weights=None, classes=classes).eval()
        randomize(model)
        with torch.no_grad():
            feats = model.encoder(image)[2:]  # [image, empty stride-2 placeholder, 4..32]
            logits = model(image)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    else:
        from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerModel

        config = SegformerConfig(
            hidden_sizes=DIMS.get(encoder, [64, 128, 320, 512]),
            depths=DEPTHS[encoder],
            num_labels=classes,
        )
        whole = layout == "transformers"
        model = (SegformerForSemanticSegmentation if whole else SegformerModel)(config).eval()
        randomize(model)
        with torch.no_grad():
            result = model(pixel_values=image, output_hidden_states=True)
        feats = result.hidden_states
        logits = result.logits if whole else None
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp)  # the published key names
            os.replace(os.path.join(tmp, "model.safetensors"), path)
    for stride, f in zip((4, 8, 16, 32), feats):
        out[f"{layout}_feat{stride}"] = nhwc(f)
    if logits is not None:
        out[f"{layout}_logits"] = nhwc(logits)
save(**out)
