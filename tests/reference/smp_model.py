"""A random-init segmentation_models_pytorch model (random batch-norm statistics too): its
state dict and its logits on the given [0, 1] images (ImageNet-normalized here, as smp's
preprocessing does).

Options: arch ("Unet" | "FPN"), encoder, classes, in_channels, kwargs (more constructor
arguments), seed, path (.pth with torch.save or .safetensors), normalize (default true).
"""

import segmentation_models_pytorch as smp
import torch
from _protocol import parse

inputs, options, save = parse()
torch.manual_seed(options.get("seed", 0))
channels = options.get("in_channels", 3)
model = getattr(smp, options["arch"])(
    options.get("encoder", "resnet34"),
    encoder_weights=None,
    in_channels=channels,
    classes=options.get("classes", 1),
    **options.get("kwargs", {}),
)
normalize = options.get("normalize", True)
mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def prepare(x):
    return (x - mean) / std if normalize else x


with torch.no_grad():
    # Random affine norms and batch-norm statistics measured on random images (as training
    # leaves them): unit-scale activations, so the tolerance means something.
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
        model(prepare(torch.rand(4, channels, 64, 64)))
model.eval()

path = options["path"]
state = model.state_dict()
if path.endswith(".safetensors"):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, path)
else:
    torch.save(state, path)

with torch.no_grad():
    x = torch.from_numpy(inputs["images"]).permute(0, 3, 1, 2)
    logits = model(prepare(x))
save(logits=logits.permute(0, 2, 3, 1).numpy())
