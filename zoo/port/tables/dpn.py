"""DPN: pretrainedmodels layout (``features.*``, smp's ``dpn*``) -> our native `dpn*`.

Our stages 1-4 are their ``conv2`` ... ``conv5``, blocks numbered from 1 as theirs. A stage's
first block's projection is ``c1x1_w_s1`` (stage 1, unstrided) or ``c1x1_w_s2``. Where the
reference slices one 1x1 conv's output between the residual and the dense path (the
projections, and the third unit of every block but DPN-68b's), we hold two convs: ``..._1``
takes the weight's leading output channels (as many as it has), ``..._2`` the trailing ones.
DPN-68b's third unit is two convs already (``c1x1_c1``, ``c1x1_c2``): the ``dpn_b`` table.
"""

import numpy as np

from zoo.port.layouts import TRANSFORMS, conv_kernel
from zoo.port.mapping import Rule, Table, register_table


def _rows(leading: bool):
    """A conv weight's leading / trailing output channels, as many as our kernel has."""

    def take(x: np.ndarray, ours: tuple[int, ...]) -> np.ndarray:
        if x.ndim != 4 or len(ours) != 4 or ours[-1] > x.shape[0]:
            return x  # the shape check names both shapes
        rows = int(ours[-1])
        return conv_kernel(x[:rows] if leading else x[x.shape[0] - rows :], ours)

    return take


TRANSFORMS["dpn_conv_leading"] = _rows(True)
TRANSFORMS["dpn_conv_trailing"] = _rows(False)
_LEADING = {"kernel": ("weight", "dpn_conv_leading")}
_TRAILING = {"kernel": ("weight", "dpn_conv_trailing")}


def _projection(match) -> str:
    stage = int(match.group(1))
    return f"features.conv{stage + 1}_1.c1x1_w_s{1 if stage == 1 else 2}"


_BLOCK = r"stage(\d)_block(\d+)"
_THEIRS = "features.conv{1+1}_{2}"


def _rules(b: bool) -> tuple[Rule, ...]:
    if b:
        third = (
            Rule(rf"{_BLOCK}_c1_conv", f"{_THEIRS}.c1x1_c1"),
            Rule(rf"{_BLOCK}_c2_conv", f"{_THEIRS}.c1x1_c2"),
        )
    else:
        third = (
            Rule(rf"{_BLOCK}_c1_conv", f"{_THEIRS}.c1x1_c.conv", _LEADING),
            Rule(rf"{_BLOCK}_c2_conv", f"{_THEIRS}.c1x1_c.conv", _TRAILING),
        )
    return (
        Rule(r"stem_conv", "features.conv1_1.conv"),
        Rule(r"stem_bn", "features.conv1_1.bn"),
        Rule(r"stage(\d)_block1_proj_bn", lambda m: f"{_projection(m)}.bn"),
        Rule(r"stage(\d)_block1_proj1_conv", lambda m: f"{_projection(m)}.conv", _LEADING),
        Rule(r"stage(\d)_block1_proj2_conv", lambda m: f"{_projection(m)}.conv", _TRAILING),
        Rule(rf"{_BLOCK}_a_(bn|conv)", f"{_THEIRS}.c1x1_a.{{3}}"),
        Rule(rf"{_BLOCK}_b_(bn|conv)", f"{_THEIRS}.c3x3_b.{{3}}"),
        Rule(rf"{_BLOCK}_c_bn", f"{_THEIRS}.c1x1_c.bn"),
        *third,
        Rule(r"final_bn", "features.conv5_bn_ac.bn"),
    )


DPN = register_table(
    "dpn",
    Table("dpn (pretrainedmodels layout)", _rules(False), ignore=(r"last_linear\..*",)),
)
DPN_B = register_table(
    "dpn_b",
    Table("dpn68b (pretrainedmodels layout)", _rules(True), ignore=(r"last_linear\..*",)),
)
