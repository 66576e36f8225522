"""A random-init torchvision ResNet (random batch-norm statistics too): its state dict and
its feature maps at strides 2..32 on the given [0, 1] images (ImageNet-normalized here).

Options: arch (a torchvision ResNet / ResNeXt name), seed, path (where to save the state
dict; .pth with torch.save or .safetensors), float64 (also the features computed in float64,
keys ``s{stride}_f64``: a yardstick for float32 round-off), channels_last output.
"""

import torch
import torchvision
from _protocol import parse

inputs, options, save = parse()
torch.manual_seed(options.get("seed", 0))
model = getattr(torchvision.models, options["arch"])(weights=None)
mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
with torch.no_grad():
    # Random affine batch norms, and running statistics measured on random images (as
    # training leaves them), so every feature map is of unit scale like a trained network's.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.weight.uniform_(0.5, 1.5)
            module.bias.normal_(0.0, 0.2)
            module.momentum = None  # cumulative average
    model.train()
    for _ in range(4):
        model((torch.rand(8, 3, 64, 64) - mean) / std)
model.eval()
path = options["path"]
if path.endswith(".safetensors"):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
else:
    torch.save(model.state_dict(), path)


def features(model, dtype):
    out = {}
    model = model.to(dtype)
    with torch.no_grad():
        x = torch.from_numpy(inputs["images"]).permute(0, 3, 1, 2).to(dtype)
        x = (x - mean.to(dtype)) / std.to(dtype)
        x = model.relu(model.bn1(model.conv1(x)))
        out["s2"] = x
        x = model.layer1(model.maxpool(x))
        out["s4"] = x
        for stride, layer in ((8, model.layer2), (16, model.layer3), (32, model.layer4)):
            x = layer(x)
            out[f"s{stride}"] = x
    return {k: v.permute(0, 2, 3, 1).numpy() for k, v in out.items()}


out = features(model, torch.float32)
if options.get("float64"):
    # The same weights in float64: how far float32 itself drifts through a deep random net.
    out.update({f"{k}_f64": v for k, v in features(model, torch.float64).items()})
save(**out)
