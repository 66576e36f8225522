"""A random-init segmentation_models_pytorch model on a MobileOne encoder (random batch-norm
statistics too, as `smp_model.py` makes them): its state dict and its logits on the given
[0, 1] images (ImageNet-normalized here) in float32 and, as a yardstick for float32 round-off
through the encoder's many summed branches, in float64.

Options: arch (an smp class name), encoder, classes, kwargs, path (.pth or .safetensors),
seed. Outputs ``logits`` and ``logits_f64`` (channels last).
"""

import segmentation_models_pytorch as smp
import torch
from _protocol import parse

inputs, options, save = parse()
mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
images = torch.from_numpy(inputs["images"]).permute(0, 3, 1, 2)
torch.manual_seed(options.get("seed", 0))
model = getattr(smp, options["arch"])(
    options["encoder"],
    encoder_weights=None,
    classes=options.get("classes", 1),
    **options.get("kwargs", {}),
)
with torch.no_grad():
    for module in model.modules():
        if isinstance(module, (torch.nn.BatchNorm2d, torch.nn.GroupNorm)):
            module.weight.uniform_(0.5, 1.5)
            module.bias.normal_(0.0, 0.2)
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None
    for p in model.segmentation_head.parameters():
        p.normal_(0.0, 0.05)
    model.train()
    for _ in range(3):
        model((torch.rand(4, 3, *images.shape[2:]) - mean) / std)
model.eval()
path = options["path"]
if path.endswith(".safetensors"):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
else:
    torch.save(model.state_dict(), path)


def logits(dtype):
    net = model.to(dtype)
    with torch.no_grad():
        x = (images.to(dtype) - mean.to(dtype)) / std.to(dtype)
        return net(x).permute(0, 2, 3, 1).numpy()


save(logits=logits(torch.float32), logits_f64=logits(torch.float64))
