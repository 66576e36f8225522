"""Native SE-ResNet, SE-ResNeXt and SENet-154 encoders in the layout of Cadene's pretrainedmodels.

The squeeze-and-excitation networks segmentation_models_pytorch builds under these names
(``se_resnet50`` ... ``se_resnext101_32x4d``, ``senet154``): bottleneck ResNets / ResNeXts
whose blocks scale their residual's channels by a gate computed from its global average (two
1x1 convs, reduction 16) before the add. Two details of the Caffe-trained originals are kept so that
their weights compute what they did: the stem's max-pool uses ``ceil_mode`` without padding,
and the SE-ResNets stride their first 1x1 conv (the SE-ResNeXts, like torchvision, their
3x3). Feature maps at strides 2-32 (64, 256, 512, 1024, 2048 channels), dilation for output
strides 16 and 8 as smp's. Checkpoint keys: ``layer0.conv1``, ``layer{1-4}.{i}.conv{1-3}``,
``...se_module.fc{1,2}`` (the ``senet`` port table). Named weights: ``imagenet``, smp's own
files (the ``smp-hub`` repositories, pinned to the revision smp 0.6 reads). SENet-154 has
a stem of three 3x3 convs (``layer0.conv1-3``, 128 channels at stride 2), 64 groups, first
1x1 convs half as wide as the 3x3s and 3x3 projection shortcuts in stages 2-4 (dilated with
their stage, as smp's ``make_dilated`` dilates every conv of a stage).

Reference:
    Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018.
"""

from __future__ import annotations

from collections.abc import Callable

from zoo import pretrained
from zoo.encoders.resnet import TINY, TINY_GROUPED, bottleneck_builder
from zoo.registry import register_encoder

# name -> (blocks per stage, groups, width per group, smp-hub revision of "imagenet").
_VARIANTS: dict[str, tuple[tuple[int, ...], int, int, str]] = {
    "se_resnet50": ((3, 4, 6, 3), 1, 64, "e6b4bc2dc85226c3d3474544410724a485455459"),
    "se_resnet101": ((3, 4, 23, 3), 1, 64, "71fe95cc0a27f444cf83671f354de02dc741b18b"),
    "se_resnet152": ((3, 8, 36, 3), 1, 64, "e79fc3d9d76f197bd76a2593c2054edf1083fe32"),
    "se_resnext50_32x4d": ((3, 4, 6, 3), 32, 4, "73246406d879a2b0e3fdfe6fddd56347d38f38ae"),
    "se_resnext101_32x4d": ((3, 4, 23, 3), 32, 4, "18808a4276f46421d358a9de554e0b93c2795df4"),
    "senet154": ((3, 8, 36, 3), 64, 4, "249f45efc9881ba560a0c480128edbc34ab87e40"),
}
SE_REDUCTION = 16

_DOC = """{title} encoder. Returns ``{{stride: features}}`` for a tensor, or a `keras.Model`.

    Args:
        inputs: image tensor in [0, 1], or None to get a standalone model.
        input_shape: shape of the standalone model's input (any number of channels).
        base_width: channels of the stem (SENet-154's: twice this), and the first stage's
            planes (64 = the original; a block's output is 4x its planes).
        groups: groups of the 3x3 convs ({groups} = the original).
        width_per_group: channels per group at the first stage ({width} = the original).
        output_stride: 32, 16 or 8; below 32 the last stages use dilation.
        weights: None (random), "imagenet" (segmentation_models_pytorch's file of the
            original ImageNet weights, from the Hugging Face hub), or the path of a
            pretrainedmodels / segmentation_models_pytorch state dict (.safetensors, .pth).
            Pretrained weights bring their ImageNet normalization into the graph (inputs stay
            in [0, 1]) and PyTorch's padding of strided convs.
        input_normalization: "weights" (the pretrained weights' normalization inside the
            model, none for random weights) or None (the caller normalizes).
        input_range: None, or ``[low, high]``: intensities mapped linearly so that low -> 0
            and high -> 1, inside the model, before the weights' normalization.
        name: prefix of every layer name.
    """


def _title(name: str) -> str:
    """ "SE-ResNet-50", "SE-ResNeXt-50 32x4d", "SENet-154"."""
    if name == "senet154":
        return "SENet-154"
    if name.startswith("se_resnext"):
        return f"SE-ResNeXt-{name[10:].replace('_', ' ')}"
    return f"SE-ResNet-{name[9:]}"


def _builder(name: str, blocks: tuple[int, ...], groups: int, width: int) -> Callable:
    doc = _DOC.format(title=_title(name), groups=groups, width=width)
    # SENet-154: a three-conv stem to 2x base_width, 1x1 convs half as wide as the 3x3s,
    # 3x3 projection shortcuts.
    big = {"deep_stem": True, "narrow_conv1": True, "shortcut_kernel": 3}
    return bottleneck_builder(
        name, blocks, groups, width, doc, ceil_pool=True, se_reduction=SE_REDUCTION,
        # Caffe's SE-ResNet strides its first 1x1 conv; the SE-ResNeXt its 3x3.
        stride_on_1x1=name.startswith("se_resnet"), **(big if name == "senet154" else {}),
    )  # fmt: skip


for _name, (_blocks, _groups, _width, _revision) in _VARIANTS.items():
    _kind = "" if _groups == 1 else f" of {_groups} groups x {_width} channels"
    _kind += ", three-conv stem, 3x3 shortcuts" if _name == "senet154" else ""
    register_encoder(
        _name,
        strides=(2, 4, 8, 16, 32),
        tiny_config=TINY if _groups == 1 else TINY_GROUPED,
        output_strides=(8, 16, 32),
        pretrained=True,
        description=(
            f"{_title(_name)} (pretrainedmodels layout, squeeze-and-excitation bottlenecks "
            f"{list(_blocks)}{_kind}); smp's weights imagenet."
        ),
    )(_builder(_name, _blocks, _groups, _width))
    pretrained.register_encoder_weights(
        _name,
        table="senet",
        first_conv="layer0.conv1",
        normalization=pretrained.IMAGENET,
        sources={
            "imagenet": pretrained.smp_hub_source(
                _name,
                "imagenet",
                _revision,
                description=(
                    f"the original ImageNet-1k weights of {_name} (Hu et al., Caffe, as "
                    "converted by Cadene's pretrainedmodels), as segmentation_models_pytorch "
                    f"publishes them (smp-hub/{_name}.imagenet)"
                ),
                license="Apache-2.0 (SENet) / BSD-3-Clause (pretrainedmodels)",
            )
        },
    )
