"""A segmentation_models_pytorch model in eval mode with randomized decoder statistics: its
encoder features, logits and decoder/head weights, to check a zoo decoder against it.

Options: `arch`, `encoder`, `classes`, `kwargs` (constructor arguments), `seed`.
Input `x`: NHWC images. Outputs: `logits` and `f{i}` (smp's feature list, NHWC) and every
non-encoder state-dict entry as `w__<key>` (PyTorch layout).
"""

import segmentation_models_pytorch as smp
import torch
from _protocol import parse
from torch import nn

inputs, options, save = parse()
torch.manual_seed(options.get("seed", 0))
model = getattr(smp, options["arch"])(
    options.get("encoder", "resnet18"),
    encoder_weights=None,
    classes=options.get("classes", 2),
    **options.get("kwargs", {}),
).eval()

with torch.no_grad():
    # smp initializes batch norms to the identity and biases to zero: randomize them so that
    # a misplaced statistic or bias shows in the logits.
    for name, module in model.named_modules():
        if name.startswith("encoder"):
            continue
        if isinstance(module, (nn.BatchNorm2d, nn.LayerNorm)):
            module.weight.uniform_(0.5, 1.5)
            module.bias.normal_(0.0, 0.2)
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_(0.0, 0.2)
            module.running_var.uniform_(0.5, 1.5)
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)) and module.bias is not None:
            module.bias.normal_(0.0, 0.2)
    x = torch.from_numpy(inputs["x"]).permute(0, 3, 1, 2).contiguous()
    features = model.encoder(x)
    logits = model(x)

weights = {
    f"w__{k}": v.numpy()
    for k, v in model.state_dict().items()
    if not k.startswith("encoder.") and not k.endswith("num_batches_tracked")
}
save(
    logits=logits.permute(0, 2, 3, 1).numpy(),
    **{f"f{i}": f.permute(0, 2, 3, 1).numpy() for i, f in enumerate(features)},
    **weights,
)
