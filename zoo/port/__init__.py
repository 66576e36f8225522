"""Weight porting: PyTorch checkpoints (torchvision, timm, segmentation_models_pytorch, ...)
into zoo models, without torch in this process.

Reading:

    state = zoo.port.load_state_dict("resnet34.safetensors")   # {key: np.ndarray}

``.safetensors`` files are read with the `safetensors` NumPy API; ``.pth``/``.pt``/``.bin``
files (``torch.save(model.state_dict())``) are converted in a separate process that has
torch (``$SEGZOO_TORCH_PYTHON`` or this Python): torch and TensorFlow must never share a
process (tensorflow/tensorflow#124205).

Mapping: a `Table` of `Rule`s maps our layer names (regex) to their module paths (template);
the parameter names and layout transforms (conv OIHW -> HWIO, depthwise, dense (out, in) ->
(in, out), batch norm ``weight/bias/running_mean/running_var`` -> ``gamma/beta/
moving_mean/moving_variance``) follow from our layer's class (`KINDS`, `TRANSFORMS`).
``num_batches_tracked`` is ignored. Tables are registered by name, one module per family
in ``zoo/port/tables/`` (auto-discovered)::

    from zoo.port import Rule, Table, register_table

    register_table("smp.linknet", Table("smp Linknet decoder", (
        Rule(r"decoder_block(\\d)_conv", "decoder.blocks.{1-1}.conv.0"),
        Rule(r"head_conv", "segmentation_head.0"),
    )))

Writing:

    table = get_table("resnet").bind(ours="encoder_")            # torchvision keys
    zoo.port.assign(model, state, table, source="resnet34.safetensors")

`assign` checks everything first (each of our variables has a rule and a key, each key is
used or ignored, each shape matches) and raises one `PortError` naming the first problem
(with both shapes) before writing anything.

Whole segmentation_models_pytorch models (`zoo.port.smp`): ``python -m zoo.port smp
--checkpoint unet.pth --model unet --out unet.keras``; a new architecture registers its
decoder table and an `SmpModel` entry with `register_smp_model`. Hugging Face transformers
SegFormers (`zoo.port.hf`): ``python -m zoo.port transformers --checkpoint model.safetensors
--out segformer.keras`` or `port_transformers`.
"""

from zoo.port import tables as tables  # registers the family tables
from zoo.port.hf import port_transformers
from zoo.port.mapping import (
    KINDS,
    TRANSFORMS,
    Assignment,
    PortError,
    Rule,
    Table,
    assign,
    get_table,
    layers_between,
    list_tables,
    plan,
    register_table,
)
from zoo.port.smp import SmpModel, list_smp_models, port_smp, register_smp_model
from zoo.port.state_dict import load_state_dict, read_safetensors

__all__ = [
    "KINDS",
    "TRANSFORMS",
    "Assignment",
    "PortError",
    "Rule",
    "SmpModel",
    "Table",
    "assign",
    "get_table",
    "layers_between",
    "list_smp_models",
    "list_tables",
    "load_state_dict",
    "plan",
    "port_smp",
    "port_transformers",
    "read_safetensors",
    "register_smp_model",
    "register_table",
]
