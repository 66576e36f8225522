"""VGG: torchvision layout (``features.{i}``, smp's ``vgg*``) -> our native `vgg*` encoders.

torchvision numbers the modules of ``features`` in order: each conv, its batch norm (``_bn``
variants) and ReLU, and a max-pool after every stage, so a conv's index follows from the
convs per stage. One table per variant (``vgg11`` ... ``vgg19_bn``).
"""

from zoo.encoders.vgg import STAGES
from zoo.port.mapping import Rule, Table, register_table


def _index(convs: tuple[int, ...], bn: bool):
    per_conv = 3 if bn else 2

    def module(match, offset: int = 0) -> str:
        stage, conv = int(match.group(1)), int(match.group(2))
        before = sum(n * per_conv + 1 for n in convs[: stage - 1])  # + the pool of each
        return f"features.{before + (conv - 1) * per_conv + offset}"

    return module


for _name, _convs in STAGES.items():
    _bn = _name.endswith("_bn")
    _module = _index(_convs, _bn)
    _rules = [Rule(r"stage(\d)_conv(\d)_conv", _module)]
    if _bn:
        _rules.append(Rule(r"stage(\d)_conv(\d)_bn", lambda m, f=_module: f(m, 1)))
    register_table(
        _name,
        Table(f"{_name} (torchvision layout)", tuple(_rules), ignore=(r"classifier\..*",)),
    )
