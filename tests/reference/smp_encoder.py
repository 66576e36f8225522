"""A random-init segmentation_models_pytorch encoder (random batch-norm statistics too, measured
on random images): its state dict and its feature maps on the given [0, 1] images
(ImageNet-normalized here), in float32 and, as a yardstick for float32 round-off through a
deep random net, in float64.

Options: encoder (an smp encoder name), seed, path (.pth with torch.save or .safetensors),
output_stride (smp's argument, passed on when given: 16 or 8 dilate the last stages).
Outputs ``s{stride}`` and ``s{stride}_f64`` for strides 2 ... 32 (channels last; smp's
timm-universal encoders that start at stride 4 give an empty stride-2 map; below output
stride 32 the keys name the level, the deepest maps keep the output stride's size).
"""

import segmentation_models_pytorch as smp
import torch
from _protocol import parse

inputs, options, save = parse()
torch.manual_seed(options.get("seed", 0))
dilated = {"output_stride": options["output_stride"]} if "output_stride" in options else {}
model = smp.encoders.get_encoder(options["encoder"], weights=None, **dilated)
mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
size = tuple(inputs["images"].shape[1:3])
with torch.no_grad():
    # Random affine batch norms with statistics measured on random images, as training
    # leaves them: unit-scale features, so a relative tolerance means something.
    for module in model.modules():
        if isinstance(module, (torch.nn.BatchNorm2d, torch.nn.LayerNorm)):
            module.weight.uniform_(0.5, 1.5)
            module.bias.normal_(0.0, 0.2)
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None
    # Layer scales (ConvNeXt's gamma) start at 1e-6: blocks would hardly count.
    for key, p in model.named_parameters():
        if key.endswith("gamma"):
            p.uniform_(0.2, 1.0)
    model.train()
    for _ in range(3):
        model((torch.rand(4, 3, *size) - mean) / std)
model.eval()
path = options["path"]
if path.endswith(".safetensors"):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
else:
    torch.save(model.state_dict(), path)


def features(dtype, suffix):
    net = model.to(dtype)
    with torch.no_grad():
        x = torch.from_numpy(inputs["images"]).permute(0, 3, 1, 2).to(dtype)
        maps = net((x - mean.to(dtype)) / std.to(dtype))[1:]
    return {f"s{2 ** (i + 1)}{suffix}": m.permute(0, 2, 3, 1).numpy() for i, m in enumerate(maps)}


out = features(torch.float32, "")
out.update(features(torch.float64, "_f64"))
save(**out)
