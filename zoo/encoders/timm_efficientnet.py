"""EfficientNet-B0..B8, L2 and EfficientNet-Lite0..4 in timm's layout, as smp's
``timm-efficientnet-*`` and ``timm-tf_efficientnet_lite*`` (registered under those names).

The same architecture as `zoo.encoders.efficientnet` (efficientnet_pytorch's), built the way
segmentation_models_pytorch builds timm's ``EfficientNet`` for these encoders: PyTorch's
symmetric padding (not "static same"), batch-norm epsilon 1e-5, feature maps at the ends of
timm's stages (stem, stages 1, 2, 4, 6), dilation of stages 3-4 / 5-6 for output strides 8
and 16. The Lite variants have no squeeze-and-excitation, ReLU6, and a fixed 32-channel stem
and fixed first / last stage depths. Checkpoint keys: timm's ``conv_stem``, ``bn1``,
``blocks.{stage}.{i}.conv_dw`` ... (the ``timm_efficientnet`` port table; the unused head
``conv_head`` / ``bn2`` is ignored). Named weights: smp's files of the TensorFlow originals
(``imagenet``, ``advprop``, ``noisy-student``; the Lite ``imagenet``), each with the
normalization it was trained with.

Reference:
    Tan and Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks",
    ICML 2019.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import accumulate

from zoo import pretrained
from zoo.encoders.efficientnet import (
    ADVPROP,
    Style,
    efficientnet_builder,
    round_filters,
    scaled_stages,
)
from zoo.registry import register_encoder

# name -> (width, depth, {weights: smp-hub revision}); "-lite" names are EfficientNet-Lite.
_VARIANTS: dict[str, tuple[float, float, dict[str, str]]] = {
    "timm-efficientnet-b0": (
        1.0,
        1.0,
        {
            "imagenet": "8419e9cc19da0b68dcd7bb12f19b7c92407ad7c4",
            "advprop": "a5870af2d24ce79e0cc7fae2bbd8e0a21fcfa6d8",
            "noisy-student": "bea8b0ff726a50e48774d2d360c5fb1ac4815836",
        },
    ),
    "timm-efficientnet-b1": (
        1.0,
        1.1,
        {
            "imagenet": "63bdd65ef6596ef24f1cadc7dd4f46b624442349",
            "advprop": "79b3d102080ef679b16c2748e608a871112233d0",
            "noisy-student": "36856124a699f6032574ceeefab02040daa90a9a",
        },
    ),
    "timm-efficientnet-b2": (
        1.1,
        1.2,
        {
            "imagenet": "e693adb39d3cb3847e71e3700a0c2aa58072cff1",
            "advprop": "b58479bf78007cfbb365091d64eeee369bddfa21",
            "noisy-student": "67c558827c6d3e0975ff9b4bce8557bc2ca80931",
        },
    ),
    "timm-efficientnet-b3": (
        1.2,
        1.4,
        {
            "imagenet": "1666b835b5151d6bb2067c7cd67e67ada6c39edf",
            "advprop": "70474cdb9f1ff4fcbd7434e66560ead1ab8e506b",
            "noisy-student": "2367bc9f61e79ee97684169a71a87db280bcf4db",
        },
    ),
    "timm-efficientnet-b4": (
        1.4,
        1.8,
        {
            "imagenet": "07868c28ab308f4de4cf1e7ec54b33b8b002ccdb",
            "advprop": "8ea1772ee9a2a0d18c1b56dce0dfac8dd33d537d",
            "noisy-student": "faeb77b6e8292a700380c840d39442d7ce4d6443",
        },
    ),
    "timm-efficientnet-b5": (
        1.6,
        2.2,
        {
            "imagenet": "004153b4ddd93d30afd9bbf34329d7f57396d413",
            "advprop": "1d1c5f05aab5ed9a1d5052847ddd4024c06a464d",
            "noisy-student": "9bc3a1e5490de92b1af061d5c2c474ab3129e38c",
        },
    ),
    "timm-efficientnet-b6": (
        1.8,
        2.6,
        {
            "imagenet": "dbbf28a5c33f021486db4070de693caad6b56c3d",
            "advprop": "3b5d3412047f7711c56ffde997911cfefe79f835",
            "noisy-student": "9b899ea9e8e0ce2ccada0f34a8cb8b5028e9bb36",
        },
    ),
    "timm-efficientnet-b7": (
        2.0,
        3.1,
        {
            "imagenet": "8ef7ffccf54dad9baceb21d05b7ef86b6b70f4cc",
            "advprop": "fcbc576ffb939c12d5cd8dad523fdae6eb0177ca",
            "noisy-student": "6b1dd73e61bf934d485d7bd4381dc3e2ab374664",
        },
    ),
    "timm-efficientnet-b8": (
        2.2,
        3.6,
        {
            "imagenet": "b5e9dde35605a3a6d17ea2a727382625f9066a37",
            "advprop": "e43f381de72e7467383c2c80bacbb7fcb9572866",
        },
    ),
    "timm-efficientnet-l2": (
        4.3,
        5.3,
        {
            "noisy-student": "cdc711e76d1becdd9197169f1a8bb1b2094e980c",
            "noisy-student-475": "35f5ba667a64bf4f3f0689daf84fc6d0f8e1311b",
        },
    ),
    "timm-tf_efficientnet_lite0": (
        1.0,
        1.0,
        {"imagenet": "f5729249af07e5d923fb8b16922256ce2865d108"},
    ),
    "timm-tf_efficientnet_lite1": (
        1.0,
        1.1,
        {"imagenet": "7b5e3f8dbb0c13b74101773584bba7523721be72"},
    ),
    "timm-tf_efficientnet_lite2": (
        1.1,
        1.2,
        {"imagenet": "cc5f6cd4c7409ebacc13292f09d369ae88547f6a"},
    ),
    "timm-tf_efficientnet_lite3": (
        1.2,
        1.4,
        {"imagenet": "ab29c8402991591d66f813bbb1f061565d9b0cd0"},
    ),
    "timm-tf_efficientnet_lite4": (
        1.4,
        1.8,
        {"imagenet": "91a822e0f03c255b34dfb7846d3858397e50ba39"},
    ),
}
_TRAINED = {  # weights -> (what, normalization: None = ImageNet's)
    "imagenet": ("ImageNet-1k", None),
    "advprop": ("AdvProp (adversarial examples) ImageNet-1k", ADVPROP),
    "noisy-student": ("Noisy Student (JFT-300M pseudo-labels) ImageNet-1k", None),
    "noisy-student-475": ("Noisy Student ImageNet-1k at 475 pixels", None),
}


def timm_layout(width: float, depth: float, lite: bool) -> tuple[list, int, list[int]]:
    """timm's EfficientNet (Lite: `lite`) stages, stem channels (Lite's fixed 32) and the
    number of each stage's last block (counted over all blocks)."""
    stages = scaled_stages(width, depth, fixed_ends=lite)
    stem = 32 if lite else round_filters(32, width)
    return stages, stem, [n - 1 for n in accumulate(stage[0] for stage in stages)]


def _plan(variant: str) -> Callable[[float], tuple]:
    def plan(width_scale: float) -> tuple:
        width, depth, _ = _VARIANTS[variant]
        lite = "lite" in variant
        # Features at the ends of timm's stages 1, 2, 4 and 6 (block numbers over all blocks).
        stages, stem, ends = timm_layout(width * width_scale, depth, lite)
        style = Style(
            size=None, epsilon=1e-5, se=not lite, activation="relu6" if lite else "silu",
            stage_names=True,
        )  # fmt: skip
        return stages, stem, (ends[1], ends[2], ends[4], ends[6]), style

    return plan


_DOC = """EfficientNet encoder in timm's layout (smp's ``{name}``). Returns
    ``{{stride: features}}`` for a tensor, or a `keras.Model`; arguments as
    `zoo.encoders.efficientnet`'s, `weights` one of smp's names for it ({named}) or a timm /
    smp state dict.
    """


for _name, (_width, _depth, _revisions) in _VARIANTS.items():
    _title = (
        f"EfficientNet-Lite{_name[-1]}"
        if "lite" in _name
        else f"EfficientNet-{_name.rsplit('-', 1)[1].upper()}"
    )
    register_encoder(
        _name,
        strides=(2, 4, 8, 16, 32),
        tiny_config={"width_scale": 0.25},
        output_strides=(8, 16, 32),
        pretrained=True,
        description=(
            f"{_title} (timm layout as smp builds it, width x{_width}, depth x{_depth}); "
            f"smp's weights {', '.join(_revisions)}."
        ),
    )(
        efficientnet_builder(
            _name, _plan(_name), _DOC.format(name=_name, named=", ".join(_revisions))
        )
    )
    pretrained.register_encoder_weights(
        _name,
        table="timm_efficientnet",
        first_conv="conv_stem",
        normalization=pretrained.IMAGENET,
        sources={
            weights: pretrained.smp_hub_source(
                _name,
                weights,
                revision,
                description=(
                    f"The {_TRAINED[weights][0]} weights of {_name} (timm's port of the "
                    f"TensorFlow originals), as segmentation_models_pytorch publishes them "
                    f"(smp-hub/{_name}.{weights})"
                ),
                license="Apache-2.0",
                # timm's tf_efficientnet_lite* were trained on [-1, 1] images.
                normalization=ADVPROP if "lite" in _name else _TRAINED[weights][1],
            )
            for weights, revision in _revisions.items()
        },
    )
