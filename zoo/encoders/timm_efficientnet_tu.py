"""timm's own EfficientNet names, native: ``efficientnet_b0`` ... ``efficientnet_b5``,
``efficientnet_lite0``, ``tf_efficientnet_b0`` ... ``tf_efficientnet_b8``,
``tf_efficientnet_l2`` and ``tf_efficientnet_lite0`` ... ``tf_efficientnet_lite4``: what
segmentation_models_pytorch builds for ``tu-<name>`` (its timm-universal encoder).

The architecture and checkpoint keys of `zoo.encoders.timm_efficientnet` (timm's layout,
the ``timm_efficientnet`` port table, the same block code), built the way timm builds each
name:

- ``efficientnet_*`` (timm's own trainings): PyTorch's symmetric ``k // 2`` padding,
  batch-norm epsilon 1e-5.
- ``tf_efficientnet_*`` (timm's ports of Google's TensorFlow checkpoints): TensorFlow's
  dynamic "same" padding (more on the bottom / right where a stride needs it), epsilon 1e-3.
- Lite (``*_lite*``): ReLU6, no squeeze-and-excitation, a 32-channel stem and one-block
  first and last stages whatever the scale.

Features at strides 2 ... 32 are the ends of timm's stages 0, 1, 2, 4 and 6 (the stride-2
map is the first stage's, 16 channels in B0, not the stem's). Output stride 16 or 8 dilates
as timm's builder does (smp's ``tu-`` passes ``output_stride`` to timm): the block that loses
its stride keeps the old rate, the blocks after it take the new one. Stochastic depth is off
by default, as in timm and smp's ``tu-``.

The same networks exist under two other names, for other weights: ``efficientnet-b0`` ...
``-b7`` (efficientnet_pytorch's layout: static "same" padding for the training resolution,
epsilon 1e-3, smp's ``imagenet`` / ``advprop`` files) and ``timm-efficientnet-b0`` ...
``-l2``, ``timm-tf_efficientnet_lite0`` ... ``4`` (smp's older names: timm's layout, always
PyTorch padding and epsilon 1e-5, the stem as stride-2 map, smp's dilation, smp's files).

Pretrained weights: ``"imagenet"`` (timm's default tag of the name, what smp's
``encoder_weights="imagenet"`` downloads), any timm tag (``"ns_jft_in1k"``, ``"ap_in1k"``,
``"ra_in1k"``, ...; `zoo.pretrained.sources(name)`), or a timm or smp file. Each brings its
normalization: ImageNet's; [-1, 1] for AdvProp (``ap_in1k``), ``ra4_*`` and the
``tf_efficientnet_lite*`` weights.

Reference:
    Tan and Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks",
    ICML 2019.
"""

from __future__ import annotations

from collections.abc import Callable

from zoo import pretrained
from zoo.encoders._timm import register_timm_encoder
from zoo.encoders.efficientnet import Style, efficientnet_builder
from zoo.encoders.timm_efficientnet import timm_layout

_TF = ("ns_jft_in1k", "ap_in1k", "aa_in1k", "in1k")  # tf_efficientnet_b0 ... b4's tags
# timm name -> (width, depth, timm's tags: its default first).
VARIANTS: dict[str, tuple[float, float, tuple[str, ...]]] = {
    "efficientnet_b0": (1.0, 1.0, ("ra_in1k", "ra4_e3600_r224_in1k")),
    "efficientnet_b1": (1.0, 1.1, ("ra4_e3600_r240_in1k", "ft_in1k")),
    "efficientnet_b2": (1.1, 1.2, ("ra_in1k",)),
    "efficientnet_b3": (1.2, 1.4, ("ra2_in1k",)),
    "efficientnet_b4": (1.4, 1.8, ("ra2_in1k",)),
    "efficientnet_b5": (1.6, 2.2, ("sw_in12k_ft_in1k", "sw_in12k")),
    "efficientnet_lite0": (1.0, 1.0, ("ra_in1k",)),
    "tf_efficientnet_b0": (1.0, 1.0, _TF),
    "tf_efficientnet_b1": (1.0, 1.1, _TF),
    "tf_efficientnet_b2": (1.1, 1.2, _TF),
    "tf_efficientnet_b3": (1.2, 1.4, _TF),
    "tf_efficientnet_b4": (1.4, 1.8, _TF),
    "tf_efficientnet_b5": (1.6, 2.2, ("ns_jft_in1k", "ap_in1k", "ra_in1k", "aa_in1k", "in1k")),
    "tf_efficientnet_b6": (1.8, 2.6, ("ns_jft_in1k", "ap_in1k", "aa_in1k")),
    "tf_efficientnet_b7": (2.0, 3.1, ("ns_jft_in1k", "ap_in1k", "ra_in1k", "aa_in1k")),
    "tf_efficientnet_b8": (2.2, 3.6, ("ap_in1k", "ra_in1k")),
    "tf_efficientnet_l2": (4.3, 5.3, ("ns_jft_in1k_475", "ns_jft_in1k")),
    "tf_efficientnet_lite0": (1.0, 1.0, ("in1k",)),
    "tf_efficientnet_lite1": (1.0, 1.1, ("in1k",)),
    "tf_efficientnet_lite2": (1.1, 1.2, ("in1k",)),
    "tf_efficientnet_lite3": (1.2, 1.4, ("in1k",)),
    "tf_efficientnet_lite4": (1.4, 1.8, ("in1k",)),
}
# Tags trained on [-1, 1] images (timm's mean = std = 0.5), and the tf_efficientnet_lite*
# weights; the others ImageNet's mean / std.
_INCEPTION_TAGS = ("ap_in1k", "ra4_e3600_r224_in1k", "ra4_e3600_r240_in1k")


def _normalization(key: str, tag: str) -> pretrained.Normalization:
    inception = tag in _INCEPTION_TAGS or key.startswith("tf_efficientnet_lite")
    return pretrained.INCEPTION if inception else pretrained.IMAGENET


def _plan(key: str) -> Callable[[float], tuple]:
    width, depth, _ = VARIANTS[key]
    lite, tf_port = "lite" in key, key.startswith("tf_")
    style = Style(
        size="same" if tf_port else None, epsilon=1e-3 if tf_port else 1e-5, se=not lite,
        activation="relu6" if lite else "silu", stage_names=True, timm_dilation=True,
    )  # fmt: skip

    def plan(width_scale: float) -> tuple:
        stages, stem, ends = timm_layout(width * width_scale, depth, lite)
        return stages, stem, (ends[0], ends[1], ends[2], ends[4], ends[6]), style

    return plan


def _register(key: str) -> None:
    width, depth, tags = VARIANTS[key]
    lite, tf_port = "lite" in key, key.startswith("tf_")
    size = key.rsplit("_", 1)[1]
    title = f"EfficientNet-Lite{size[-1]}" if lite else f"EfficientNet-{size.upper()}"
    port = (
        "TensorFlow port: 'same' padding, BN eps 1e-3"
        if tf_port
        else "PyTorch padding, BN eps 1e-5"
    )
    others = ", ReLU6, no SE" if lite else ""
    named = f"timm's weights imagenet (= {tags[0]}){''.join(', ' + t for t in sorted(tags[1:]))}"
    register_timm_encoder(
        key,
        efficientnet_builder(key, _plan(key), "", drop_path=0.0),
        description=(
            f"{title} ({port}{others}; timm's {key}, smp's tu-{key}; width x{width}, depth "
            f"x{depth}); {named}."
        ),
        args=(
            "    width_scale: channels times this (on top of the variant's width), rounded to\n"
            "        multiples of 8 as timm rounds them (Lite's 32-channel stem stays).\n"
            "    drop_path_rate: stochastic depth of the last block (linear from 0; timm's\n"
            "        default 0).\n"
        ),
        tiny_config={"width_scale": 0.25},
        table="timm_efficientnet",
        first_conv="conv_stem",
        tags=tags,
        # Local files: the default tag's (smp's get_preprocessing_params for tu-<key>).
        normalization=_normalization(key, tags[0]),
        tag_normalization={t: _normalization(key, t) for t in tags},
    )


for _key in VARIANTS:
    _register(_key)
