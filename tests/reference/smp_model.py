"""Random-init segmentation_models_pytorch models (random batch-norm statistics too): their
state dicts and their logits on the given [0, 1] images (ImageNet-normalized here, as smp's
preprocessing does).

Options: models, a list of {arch (an smp class name: "Unet", "FPN", "PAN", ...), encoder,
classes, kwargs (more constructor arguments), path (.pth with torch.save or .safetensors)};
seed; warmup_size (height and width of the random batch-norm warm-up images, default the
images' own size: smp's PAN cannot run below 128x128 at stride 16); float64 (also output
logits_0_f64, ...: the same model in float64, a yardstick for float32 round-off). Outputs
logits_0, logits_1, ... in that order. One process for several models: smp takes seconds to
import.
"""

import segmentation_models_pytorch as smp
import torch
from _protocol import parse

inputs, options, save = parse()
mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
images = torch.from_numpy(inputs["images"]).permute(0, 3, 1, 2)
warmup = tuple(options.get("warmup_size", images.shape[2:]))
outputs = {}
for i, spec in enumerate(options["models"]):
    torch.manual_seed(options.get("seed", 0) + i)
    model = getattr(smp, spec["arch"])(
        spec.get("encoder", "resnet34"),
        encoder_weights=None,
        classes=spec.get("classes", 1),
        **spec.get("kwargs", {}),
    )
    with torch.no_grad():
        # Random affine norms and batch-norm statistics measured on random images (as
        # training leaves them): unit-scale activations, so the tolerance means something.
        for module in model.modules():
            if isinstance(module, (torch.nn.BatchNorm2d, torch.nn.GroupNorm, torch.nn.LayerNorm)):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.2)
            if isinstance(module, torch.nn.BatchNorm2d):
                module.momentum = None
        for key, p in model.named_parameters():
            if key.endswith("gamma"):  # layer scales (ConvNeXt's) start at 1e-6
                p.uniform_(0.2, 1.0)
        for p in model.segmentation_head.parameters():
            p.normal_(0.0, 0.05)
        model.train()
        for _ in range(3):
            model((torch.rand(4, 3, *warmup) - mean) / std)
    model.eval()
    path = spec["path"]
    if path.endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    else:
        torch.save(model.state_dict(), path)
    with torch.no_grad():
        outputs[f"logits_{i}"] = model((images - mean) / std).permute(0, 2, 3, 1).numpy()
        if options.get("float64"):
            x = (images.double() - mean.double()) / std.double()
            outputs[f"logits_{i}_f64"] = model.double()(x).permute(0, 2, 3, 1).numpy()
save(**outputs)
