"""ConvNeXt: timm's layout (``stem.0``, ``stages.{s}.downsample.{0,1}``,
``stages.{s}.blocks.{b}.{conv_dw, norm, mlp.fc1, mlp.fc2, gamma}``) -> our native
`convnext_*` encoders.

smp's ``tu-convnext_*`` files hold the same modules under ``encoder.model.`` with timm's
features-only names (``stem_0``, ``stages_1``); `zoo.encoders.convnext.smp_to_timm_key`
renames them before this table. timm's atto ... nano hold their MLPs as 1x1 convolutions
(``conv_mlp``, weights ``(out, in, 1, 1)``), the others as linear layers ``(out, in)``: both
fill our `ChannelMLP`'s kernels. The classifier head (``head.norm``, ``head.fc``) is not built.
"""

import numpy as np

from zoo.port.layouts import TRANSFORMS, dense_kernel
from zoo.port.mapping import Rule, Table, register_table


def _pointwise_dense(x: np.ndarray, ours: tuple[int, ...]) -> np.ndarray:
    """A linear layer's ``(out, in)`` or a 1x1 convolution's ``(out, in, 1, 1)`` weight ->
    ``Dense.kernel`` ``(in, out)``."""
    if x.ndim == 4 and x.shape[2:] == (1, 1):
        x = x[:, :, 0, 0]
    return dense_kernel(x, ours)


TRANSFORMS["pointwise_dense"] = _pointwise_dense

_BLOCK = r"stage(\d)_block(\d+)_"
# Our `ChannelMLP` holds both of timm's MLP layers.
_MLP = {
    f"{fc}_{ours}": (f"{fc}.{theirs}", transform)
    for fc in ("fc1", "fc2")
    for ours, theirs, transform in (
        ("kernel", "weight", "pointwise_dense"),
        ("bias", "bias", "identity"),
    )
}

register_table(
    "convnext",
    Table(
        "convnext (timm layout)",
        (
            Rule(r"stem_conv", "stem.0"),
            Rule(r"stem_norm", "stem.1"),
            Rule(r"stage(\d)_downsample_norm", "stages.{1}.downsample.0"),
            Rule(r"stage(\d)_downsample_conv", "stages.{1}.downsample.1"),
            Rule(_BLOCK + r"conv_dw", "stages.{1}.blocks.{2}.conv_dw"),
            Rule(_BLOCK + r"norm", "stages.{1}.blocks.{2}.norm"),
            Rule(_BLOCK + r"mlp", "stages.{1}.blocks.{2}.mlp", kind=_MLP),
            Rule(
                _BLOCK + r"gamma",
                "stages.{1}.blocks.{2}.gamma",
                kind={"gamma": ("", "identity")},
            ),
        ),
        ignore=(r"head\..*", r"norm_pre\..*"),
    ),
)
