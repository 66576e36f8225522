"""Xception: pretrainedmodels layout (smp's ``xception``) -> our native `xception`.

A block's ``rep`` is pretrainedmodels' Sequential of (ReLU, SeparableConv2d, BatchNorm2d)
units, so unit ``j`` (from 1) has its separable conv at index ``3j - 2`` and its batch norm
one after; block 1 starts without the ReLU, one index earlier.
"""

from zoo.port.mapping import Rule, Table, register_table


def _rep(offset: int, module: str = ""):
    def theirs(match) -> str:
        block, unit = int(match.group(1)), int(match.group(2))
        index = 3 * unit - 2 - (block == 1) + offset
        return f"block{block}.rep.{index}{module}"

    return theirs


XCEPTION = register_table(
    "xception",
    Table(
        "xception (pretrainedmodels layout)",
        (
            Rule(r"stem(\d)_conv", "conv{1}"),
            Rule(r"stem(\d)_bn", "bn{1}"),
            Rule(r"block(\d+)_sep(\d)_dw", _rep(0, ".conv1")),
            Rule(r"block(\d+)_sep(\d)_pw", _rep(0, ".pointwise")),
            Rule(r"block(\d+)_sep(\d)_bn", _rep(1)),
            Rule(r"block(\d+)_skip_conv", "block{1}.skip"),
            Rule(r"block(\d+)_skip_bn", "block{1}.skipbn"),
            Rule(r"exit(\d)_dw", "conv{1+2}.conv1"),
            Rule(r"exit(\d)_pw", "conv{1+2}.pointwise"),
            Rule(r"exit(\d)_bn", "bn{1+2}"),
        ),
        ignore=(r"(fc|last_linear)\..*",),
    ),
)
