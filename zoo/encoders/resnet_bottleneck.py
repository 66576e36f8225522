"""Native ResNet-50/101/152 and ResNeXt-50/101 encoders in the torchvision layout.

torchvision's bottleneck ResNets (ResNet v1.5: the stride sits on the 3x3 conv of a block)
and their grouped-convolution variants (ResNeXt ``32xNd``: 32 groups of N channels in the
first stage's 3x3 convs), the same encoders segmentation_models_pytorch builds under these
names: the stem, the feature maps at strides 2-32 (64, 256, 512, 1024, 2048 channels), the
dilation for output strides 16 and 8, and the checkpoint keys (``layer{1-4}.{i}.conv{1-3}``,
the ``resnet`` port table) are those of `zoo.encoders.resnet`, so a torchvision, timm or
smp file of one of them loads, and an smp model built on one ports (``python -m zoo.port
smp``). Named weights are smp's own (the ``smp-hub`` repositories of the Hugging Face hub,
pinned to the revision smp 0.6 reads) under smp's names: ``imagenet`` (torchvision's),
``ssl`` / ``swsl`` (Facebook's semi- and semi-weakly supervised) and ``instagram``
(weakly supervised on Instagram hashtags).

Reference:
    He et al., "Deep Residual Learning for Image Recognition", CVPR 2016.
    Xie et al., "Aggregated Residual Transformations for Deep Neural Networks", CVPR 2017.
"""

from __future__ import annotations

from collections.abc import Callable

from zoo import pretrained
from zoo.encoders.resnet import TINY, TINY_GROUPED, bottleneck_builder
from zoo.registry import register_encoder

# name -> (blocks per stage, groups, width per group, {weights name: smp-hub revision}).
_VARIANTS: dict[str, tuple[tuple[int, ...], int, int, dict[str, str]]] = {
    "resnet50": (
        (3, 4, 6, 3),
        1,
        64,
        {
            "imagenet": "00cb74e366966d59cd9a35af57e618af9f88efe9",
            "ssl": "d07daf5b4377f3700c6ac61906b0aafbc4eca46b",
            "swsl": "b9520cce124f91c6fe7eee45721a2c7954f0d8c0",
        },
    ),
    "resnet101": ((3, 4, 23, 3), 1, 64, {"imagenet": "cd7c15e8c51da86ae6a084515fdb962d0c94e7d1"}),
    "resnet152": ((3, 8, 36, 3), 1, 64, {"imagenet": "951dd835e9d086628e447b484584c8983f9e1dd0"}),
    "resnext50_32x4d": (
        (3, 4, 6, 3),
        32,
        4,
        {
            "imagenet": "329793c85d62fd340ae42ae39fb905a63df872e7",
            "ssl": "9b67cff77d060c7044493a58c24d1007c1eb06c3",
            "swsl": "52e6e49da61b8e26ca691e1aef2cbb952884057d",
        },
    ),
    "resnext101_32x4d": (
        (3, 4, 23, 3),
        32,
        4,
        {
            "ssl": "b39796c8459084d13523b7016c3ef13a2e9e472b",
            "swsl": "3f8355b4892a31f001a832b49b2b01484d48516a",
        },
    ),
    "resnext101_32x8d": (
        (3, 4, 23, 3),
        32,
        8,
        {
            "imagenet": "221af6198d03a4ee88992f78a1ee81b46a52d339",
            "instagram": "44cd927aa6e64673ffe9d31230bad44abc18b823",
            "ssl": "723a95ddeed335c9488c37c6cbef13d779ac8f97",
            "swsl": "58cf0bb65f91365470398080d9588b187d1777c4",
        },
    ),
    "resnext101_32x16d": (
        (3, 4, 23, 3),
        32,
        16,
        {
            "instagram": "64e8e320eeae6501185b0627b2429a68e52d050c",
            "ssl": "1283fe03fbb6aa2599b2df24095255acb93c3d5c",
            "swsl": "30ba61bbd4d6af0d955c513dbb4f557b84eb094f",
        },
    ),
    "resnext101_32x32d": (
        (3, 4, 23, 3),
        32,
        32,
        {"instagram": "c9405de121fdaa275a89de470fb19409e3eeaa86"},
    ),
    "resnext101_32x48d": (
        (3, 4, 23, 3),
        32,
        48,
        {"instagram": "53e61a962b824ad7027409821f9ac3e3336dd024"},
    ),
}

_TRAINED_ON = {
    "imagenet": ("torchvision's ImageNet-1k weights (IMAGENET1K_V1)", "BSD-3-Clause (torchvision)"),
    "ssl": (
        "Facebook's semi-supervised weights (YFCC100M, fine-tuned on ImageNet-1k)",
        "CC-BY-NC-4.0 (non-commercial)",
    ),
    "swsl": (
        "Facebook's semi-weakly supervised weights (Instagram-1B, fine-tuned on ImageNet-1k)",
        "CC-BY-NC-4.0 (non-commercial)",
    ),
    "instagram": (
        "Facebook's weakly supervised weights (Instagram-3.5B hashtags, fine-tuned on ImageNet-1k)",
        "CC-BY-NC-4.0 (non-commercial)",
    ),
}

_DOC = """{title} encoder. Returns ``{{stride: features}}`` for a tensor, or a `keras.Model`.

    Args:
        inputs: image tensor in [0, 1], or None to get a standalone model.
        input_shape: shape of the standalone model's input (any number of channels).
        base_width: channels of the stem, and the first stage's planes (64 = torchvision; a
            block's output is 4x its planes).
        groups: groups of the 3x3 convs ({groups} = torchvision's {name}).
        width_per_group: channels per group at the first stage ({width} = torchvision's).
        output_stride: 32, 16 or 8; below 32 the last stages use dilation.
        weights: None (random), {named} (segmentation_models_pytorch's weights of this
            encoder, from the Hugging Face hub), or the path of a torchvision / timm /
            segmentation_models_pytorch state dict (.safetensors, .pth). Pretrained weights
            bring their ImageNet normalization into the graph (inputs stay in [0, 1]) and
            PyTorch's padding of strided convs; a first conv for other than 3 channels is
            adapted (`zoo.pretrained.adapt_input_kernel`).
        input_normalization: "weights" (the pretrained weights' normalization inside the
            model, none for random weights) or None (the caller normalizes, as with
            segmentation_models_pytorch).
        input_range: None, or ``[low, high]``: intensities mapped linearly so that low -> 0
            and high -> 1, inside the model, before the weights' normalization.
        name: prefix of every layer name.
    """


def _title(name: str, groups: int) -> str:
    """ "ResNet-50", "ResNeXt-101 32x8d"."""
    return f"ResNet-{name[6:]}" if groups == 1 else f"ResNeXt-{name[7:].replace('_', ' ')}"


def _builder(name: str, blocks: tuple[int, ...], groups: int, width: int) -> Callable:
    named = " / ".join(f'"{w}"' for w in _VARIANTS[name][3])
    title = _title(name, groups)
    doc = _DOC.format(title=title, name=name, groups=groups, width=width, named=named)
    return bottleneck_builder(name, blocks, groups, width, doc)


for _name, (_blocks, _groups, _width, _revisions) in _VARIANTS.items():
    _kind = "" if _groups == 1 else f" of {_groups} groups x {_width} channels"
    register_encoder(
        _name,
        strides=(2, 4, 8, 16, 32),
        tiny_config=TINY if _groups == 1 else TINY_GROUPED,
        output_strides=(8, 16, 32),
        pretrained=True,
        description=(
            f"{_title(_name, _groups)} (torchvision layout, bottleneck blocks "
            f"{list(_blocks)}{_kind}); smp's weights {', '.join(_revisions)}."
        ),
    )(_builder(_name, _blocks, _groups, _width))
    pretrained.register_encoder_weights(
        _name,
        table="resnet",
        first_conv="conv1",
        normalization=pretrained.IMAGENET,
        sources={
            _weights: pretrained.smp_hub_source(
                _name,
                _weights,
                _revision,
                description=(
                    f"{_TRAINED_ON[_weights][0]} for {_name}, as segmentation_models_pytorch "
                    f"publishes them (smp-hub/{_name}.{_weights})"
                ),
                license=_TRAINED_ON[_weights][1],
            )
            for _weights, _revision in _revisions.items()
        },
    )
