"""Native ConvNeXt encoders (timm's ``convnext_atto`` ... ``convnext_xlarge``), what
segmentation_models_pytorch builds for ``tu-convnext_*``.

A patchify stem (4x4 convolution, stride 4, then a layer norm) and four stages; stages 2-4
open with a layer norm and a 2x2 stride-2 convolution. A block is ``x + gamma * fc2(GELU(
fc1(LN(dwconv7x7(x)))))``: a depthwise 7x7 convolution, a channels-last layer norm (epsilon
1e-6), an exact-GELU MLP of 4x the width, a learned per-channel layer scale (`LayerScale`,
1e-6 at initialization) and optional stochastic depth. Stage outputs are the features at
strides 4, 8, 16 and 32 (no stride-2 level, like smp's ``tu-convnext_*``, whose stride-2
level is an empty tensor). Output stride 16 or 8 keeps the last stages at that stride the
way timm does: their downsampling convolution gets stride 1 ("same" padding, dilated from
the second such stage on) and their blocks dilate the depthwise convolution by 2 or 4.
Widths and depths follow timm, so parameter counts equal timm's (without the classifier)
and smp's; timm's atto ... nano use 1x1 convolutions in their MLPs (``conv_mlp``), the same
function as our `ChannelMLP`, whose files load all the same.

Pretrained weights (`weights` / a model's `encoder_weights`): ``"imagenet"`` (timm's default
weights of the variant, the ones smp's ``encoder_weights="imagenet"`` downloads), a timm tag
(``"fb_in22k_ft_in1k"``, ``"in12k_ft_in1k"``, ...; `zoo.pretrained.sources(name)` lists
them) or a local file: a timm checkpoint (``stem.0.weight`` ...), or an smp model or encoder
(``encoder.model.stem_0.weight`` ...). All are ImageNet-normalized; the normalization goes
inside the graph.

Reference:
    Liu et al., "A ConvNet for the 2020s", CVPR 2022.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import keras

from zoo.checks import check_positive, check_positive_int, check_positive_ints, check_rate
from zoo.encoders._common import check_output_stride, native_encoder
from zoo.encoders._timm import register_timm_encoder
from zoo.layers import ChannelMLP, DropPath, LayerScale

EPSILON = 1e-6  # timm's LayerNorm / LayerNorm2d default
# timm name -> (dims, depths, timm's default pretrained tag, the other ImageNet tags)
VARIANTS = {
    "convnext_atto": ((40, 80, 160, 320), (2, 2, 6, 2), "d2_in1k", ()),
    "convnext_femto": ((48, 96, 192, 384), (2, 2, 6, 2), "d1_in1k", ()),
    "convnext_pico": ((64, 128, 256, 512), (2, 2, 6, 2), "d1_in1k", ()),
    "convnext_nano": (
        (80, 160, 320, 640),
        (2, 2, 8, 2),
        "in12k_ft_in1k",
        ("d1h_in1k", "in12k", "r384_in12k_ft_in1k"),
    ),
    "convnext_tiny": (
        (96, 192, 384, 768),
        (3, 3, 9, 3),
        "in12k_ft_in1k",
        ("fb_in1k", "fb_in22k", "fb_in22k_ft_in1k", "fb_in22k_ft_in1k_384", "in12k"),
    ),
    "convnext_small": (
        (96, 192, 384, 768),
        (3, 3, 27, 3),
        "in12k_ft_in1k",
        ("fb_in1k", "fb_in22k", "fb_in22k_ft_in1k", "fb_in22k_ft_in1k_384", "in12k"),
    ),
    "convnext_base": (
        (128, 256, 512, 1024),
        (3, 3, 27, 3),
        "fb_in22k_ft_in1k",
        ("fb_in1k", "fb_in22k", "fb_in22k_ft_in1k_384"),
    ),
    "convnext_large": (
        (192, 384, 768, 1536),
        (3, 3, 27, 3),
        "fb_in22k_ft_in1k",
        ("fb_in1k", "fb_in22k", "fb_in22k_ft_in1k_384"),
    ),
    "convnext_xlarge": (
        (256, 512, 1024, 2048),
        (3, 3, 27, 3),
        "fb_in22k_ft_in1k",
        ("fb_in22k", "fb_in22k_ft_in1k_384"),
    ),
}
# Tests and smoke runs: every layer kind, a few thousand parameters.
TINY = {"dims": (8, 16, 24, 32), "depths": (1, 1, 1, 1)}


def _stage_plan(output_stride: int) -> list[tuple[int, int, int]]:
    """Per stage: (downsampling stride, its convolution's dilation, the blocks' dilation),
    as timm's ConvNeXt plans them for `output_stride`."""
    plan, stride, dilation = [], 4, 1
    for s in range(4):
        step = 1 if s == 0 else 2
        if stride >= output_stride and step > 1:
            dilation *= step
            step = 1
        stride *= step
        plan.append((step, 1 if dilation in (1, 2) else 2, dilation))
    return plan


def convnext_features(
    x,
    dims: Sequence[int],
    depths: Sequence[int],
    kernel_size: int = 7,
    mlp_ratio: float = 4.0,
    layer_scale_init: float = 1e-6,
    drop_path_rate: float = 0.0,
    output_stride: int = 32,
    name: str = "encoder",
) -> dict:
    """ConvNeXt feature maps ``{4: ..., 8: ..., 16: ..., 32: ...}`` of `x` (keyed by their
    real stride: below output stride 32 the deepest ones share a key and the last wins).

    Layers: ``{name}_stem_conv``, ``{name}_stem_norm``, ``{name}_stage{s}_downsample_{norm,
    conv}`` (s = 1, 2, 3) and ``{name}_stage{s}_block{b}_{conv_dw, norm, mlp, gamma,
    drop_path, add}`` (s, b from 0, as timm's ``stages.{s}.blocks.{b}``; ``mlp`` is a
    `ChannelMLP`, timm's ``mlp.fc1`` and ``mlp.fc2``).
    The stochastic-depth rate grows linearly from 0 (first block) to `drop_path_rate` (last
    block); blocks with rate 0 have no `DropPath` layer.
    """
    total = sum(depths)
    rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
    x = keras.layers.Conv2D(dims[0], 4, strides=4, name=f"{name}_stem_conv")(x)
    x = keras.layers.LayerNormalization(epsilon=EPSILON, name=f"{name}_stem_norm")(x)
    features, stride, index = {}, 4, 0
    for s, ((step, down_dilation, dilation), dim, depth) in enumerate(
        zip(_stage_plan(output_stride), dims, depths)
    ):
        stage = f"{name}_stage{s}"
        if s > 0:
            x = keras.layers.LayerNormalization(epsilon=EPSILON, name=f"{stage}_downsample_norm")(x)
            # Stride 1 (a dilated stage): timm's "same" padding, one extra row and column
            # after the image for the 2x2 kernel, before and after it when dilated by 2.
            x = keras.layers.Conv2D(
                dim,
                2,
                strides=step,
                dilation_rate=down_dilation,
                padding="valid" if step > 1 else "same",
                name=f"{stage}_downsample_conv",
            )(x)
            stride *= step
        for b in range(depth):
            block = f"{stage}_block{b}"
            rate = rates[index]
            index += 1
            y = keras.layers.DepthwiseConv2D(
                kernel_size, padding="same", dilation_rate=dilation, name=f"{block}_conv_dw"
            )(x)
            y = keras.layers.LayerNormalization(epsilon=EPSILON, name=f"{block}_norm")(y)
            y = ChannelMLP(int(mlp_ratio * dim), name=f"{block}_mlp")(y)
            y = LayerScale(layer_scale_init, name=f"{block}_gamma")(y)
            if rate > 0:
                y = DropPath(rate, name=f"{block}_drop_path")(y)
            x = keras.layers.Add(name=f"{block}_add")([x, y])
        features[stride] = x
    return features


def _convnext(
    encoder: str,
    inputs,
    input_shape,
    dims,
    depths,
    kernel_size,
    mlp_ratio,
    layer_scale_init,
    drop_path_rate,
    weights,
    input_normalization,
    input_range,
    output_stride,
    name,
):
    dims = check_positive_ints("dims", dims, 4)
    depths = check_positive_ints("depths", depths, 4)
    kernel_size = check_positive_int("kernel_size", kernel_size)
    if kernel_size % 2 == 0:
        raise ValueError(
            "Invalid value for argument `kernel_size`: expected an odd positive integer (the "
            f"depthwise convolution keeps the size). Received: kernel_size={kernel_size!r}"
        )
    mlp_ratio = check_positive("mlp_ratio", mlp_ratio)
    layer_scale_init = check_positive("layer_scale_init", layer_scale_init)
    drop_path_rate = check_rate("drop_path_rate", drop_path_rate)
    check_output_stride(output_stride)
    return native_encoder(
        encoder,
        inputs,
        input_shape,
        weights,
        input_normalization,
        input_range,
        name,
        lambda x: convnext_features(
            x,
            dims,
            depths,
            kernel_size,
            mlp_ratio,
            layer_scale_init,
            drop_path_rate,
            output_stride,
            name,
        ),
    )


def encoder_params(dims: Sequence[int], depths: Sequence[int], mlp_ratio: float = 4.0) -> int:
    """Trainable parameters of a ConvNeXt encoder (stem, downsampling layers, blocks) from its
    widths and depths, for 3 input channels: what timm and smp count without the head."""
    total = 3 * 16 * dims[0] + dims[0] + 2 * dims[0]  # stem conv + norm
    for s, (dim, depth) in enumerate(zip(dims, depths)):
        if s > 0:
            total += 2 * dims[s - 1] + 4 * dims[s - 1] * dim + dim  # norm + 2x2 conv
        hidden = int(mlp_ratio * dim)
        block = 49 * dim + dim + 2 * dim  # depthwise 7x7 + norm
        block += dim * hidden + hidden + hidden * dim + dim + dim  # MLP + gamma
        total += depth * block
    return total


def _register(key: str) -> None:
    dims, depths, default_tag, tags = VARIANTS[key]

    def builder(
        inputs=None,
        *,
        input_shape: Sequence[int | None] = (None, None, 3),
        dims: Sequence[int] = dims,
        depths: Sequence[int] = depths,
        kernel_size: int = 7,
        mlp_ratio: float = 4.0,
        layer_scale_init: float = 1e-6,
        drop_path_rate: float = 0.0,
        weights: str | None = None,
        input_normalization: str | None = "weights",
        input_range: Sequence[float] | None = None,
        output_stride: int = 32,
        name: str = "encoder",
    ):
        return _convnext(
            key,
            inputs,
            input_shape,
            dims,
            depths,
            kernel_size,
            mlp_ratio,
            layer_scale_init,
            drop_path_rate,
            weights,
            input_normalization,
            input_range,
            output_stride,
            name,
        )

    params = encoder_params(dims, depths)
    variant = key.split("_")[1].capitalize().replace("Xl", "XL")
    register_timm_encoder(
        key,
        builder,
        description=(
            f"ConvNeXt-{variant} (timm's {key}, smp's tu-{key}; widths {list(dims)}, depths "
            f"{list(depths)}), {params / 1e6:.1f}M params; timm's weights imagenet "
            f"(= {default_tag}){''.join(', ' + t for t in tags)}."
        ),
        args=(
            "    dims: channels of the four stages.\n"
            "    depths: blocks per stage.\n"
            "    kernel_size: the blocks' depthwise kernel size (odd).\n"
            "    mlp_ratio: MLP hidden width / channels.\n"
            "    layer_scale_init: initial value of the blocks' layer scales.\n"
            "    drop_path_rate: stochastic depth of the last block (linear from 0); 0 disables.\n"
        ),
        tiny_config=TINY,
        strides=(4, 8, 16, 32),
        table="convnext",
        first_conv="stem.0",
        tags=(default_tag, *tags),
        # smp's encoder wraps timm's features-only model: ``encoder.model.stem_0`` ...
        rename=smp_to_timm_key,
    )


def smp_to_timm_key(key: str) -> str:
    """An smp ``tu-convnext_*`` key (timm's features-only model under ``model.``, its top
    sequential modules flattened: ``model.stem_0``, ``model.stages_1``; the ``model.`` may
    already be gone) as timm's own checkpoint names it (``stem.0``, ``stages.1``), smp's
    ``encoder.`` kept."""
    return _SMP_KEY.sub(r"\1\2.\3.", key)


_SMP_KEY = re.compile(r"^(encoder\.)?(?:model\.)?(stem|stages)_(\d+)\.")


for _key in VARIANTS:
    _register(_key)
