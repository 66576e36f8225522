"""Convert a ``torch.save`` state dict to ``.safetensors``: ``python THIS_FILE IN OUT``.

Run as a script by `zoo.port.state_dict` in its own process (torch next to TensorFlow crashes,
tensorflow/tensorflow#124205), so it imports torch and safetensors only, never the zoo.
Loads with ``weights_only=True`` (no pickled code runs); unwraps ``{"state_dict": ...}`` and
``{"model": ...}`` checkpoints; stores floating tensors as float32. Errors end in one line.
"""

import sys


def main(src: str, dst: str) -> None:
    import torch
    from safetensors.torch import save_file

    try:
        obj = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001  (one line for the caller, whatever torch raised)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        sys.exit(
            f"not a torch state dict readable with weights_only=True ({first}); save "
            "model.state_dict() instead of the model object"
        )
    for wrapper in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
            break
    if not isinstance(obj, dict):
        sys.exit(f"expected a state dict (a dict of tensors), got {type(obj).__name__}")
    tensors = {}
    for key, value in obj.items():
        if not torch.is_tensor(value):
            continue  # optimizer steps, epochs, hyperparameters: not weights
        value = value.detach().cpu()
        if value.is_floating_point():
            value = value.float()
        tensors[str(key)] = value.contiguous().clone()
    if not tensors:
        sys.exit("the file holds no tensors")
    save_file(tensors, dst)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python _torch_to_safetensors.py IN.pth OUT.safetensors")
    main(sys.argv[1], sys.argv[2])
