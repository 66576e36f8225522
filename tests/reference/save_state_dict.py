"""Save the input arrays as a torch state dict with torch.save (options: path, wrap)."""

import torch
from _protocol import parse

inputs, options, save = parse()
state = {k: torch.from_numpy(v) for k, v in inputs.items()}
if options.get("wrap"):
    state = {options["wrap"]: state, "epoch": 3}
torch.save(state, options["path"])
save()
