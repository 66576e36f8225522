"""Save the input arrays as torch state dicts with torch.save.

Options: files, a list of [path, wrap]: wrap None saves the state dict itself, a key saves
``{wrap: state_dict, "epoch": 3}`` (a training checkpoint).
"""

import torch
from _protocol import parse

inputs, options, save = parse()
state = {k: torch.from_numpy(v) for k, v in inputs.items()}
for path, wrap in options["files"]:
    torch.save({wrap: state, "epoch": 3} if wrap else state, path)
save()
