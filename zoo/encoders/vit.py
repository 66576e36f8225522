"""Vision Transformer (ViT) encoders in timm's layout, the backbones of DPT.

A ViT cuts the image into ``patch_size`` squares (a strided convolution), puts a class token
in front, adds learned absolute position embeddings (resized bicubically for other grids than
the one they were learned for, as timm's ``dynamic_img_size=True``) and stacks `depth`
pre-norm transformer blocks ``x + Attn(LN(x))``, ``x + MLP(LN(x))`` (layer-norm epsilon 1e-6,
a fused ``qkv`` projection, an exact-GELU MLP of ``mlp_ratio`` times the width). Every block
keeps the patch grid: the encoder is *plain*, all its features have the stride `patch_size`,
so it serves decoders that read several blocks at one stride (`dpt`) rather than a pyramid.

Called like every encoder it returns ``{patch_size: grid}``, the last block's tokens as a
``(batch, h, w, width)`` grid (no final norm: DPT reads raw block outputs, and a checkpoint's
``norm`` and classifier ``head`` are not loaded). With ``output_indices`` (what `dpt` passes)
it builds the blocks up to the last index only and adds ``"blocks"``: a ``(grid, prefix)``
pair per index, the prefix being the class token ``(batch, 1, width)``.

Weights (`weights` / a model's `encoder_weights`): ``"imagenet"`` (timm's default weights of
the variant, e.g. ``augreg2_in21k_ft_in1k`` for ViT-B/16), a timm tag (``"augreg_in21k"``,
``"dino"``, ...: `TAGS`), a timm checkpoint of the same variant (``model.safetensors`` or
``pytorch_model.bin`` of ``timm/vit_*``), or a segmentation_models_pytorch DPT's (its
``encoder.model.`` part); their normalization (timm's ViT default, mean = std = 0.5;
ImageNet's for DINO and MAE) goes inside the graph. Parameter counts equal timm's
without the final norm and classifier.

Reference:
    Dosovitskiy et al., "An Image is Worth 16x16 Words: Transformers for Image Recognition
    at Scale", ICLR 2021.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from zoo import pretrained
from zoo.checks import check_positive, check_positive_int, check_rate
from zoo.encoders._common import apply_weights_normalization, run_encoder
from zoo.layers import (
    GELU,
    ClassToken,
    DropPath,
    PositionEmbedding,
    QKVAttention,
    TokensToGrid,
)
from zoo.registry import register_encoder

EPSILON = 1e-6
# timm name -> (embed_dim, depth, num_heads, patch_size, img_size)
VARIANTS = {
    "vit_tiny_patch16_224": (192, 12, 3, 16, 224),
    "vit_small_patch16_224": (384, 12, 6, 16, 224),
    "vit_small_patch32_224": (384, 12, 6, 32, 224),
    "vit_base_patch8_224": (768, 12, 12, 8, 224),
    "vit_base_patch16_224": (768, 12, 12, 16, 224),
    "vit_base_patch32_224": (768, 12, 12, 32, 224),
    "vit_base_patch16_384": (768, 12, 12, 16, 384),
    "vit_large_patch16_224": (1024, 24, 16, 16, 224),
    "vit_large_patch16_384": (1024, 24, 16, 16, 384),
}
# timm's default preprocessing of its vit_* weights.
NORMALIZATION = pretrained.INCEPTION
# timm's pretrained tags per variant (timm 1.0): the default first (what "imagenet" and
# smp's encoder_weights="imagenet" take), then the others, each with its license when it is
# not Apache-2.0; DINO's and MAE's are ImageNet-normalized. (timm's "bamboo" weights, of
# unstated license, are left out.)
TAGS = {
    "vit_tiny_patch16_224": ("augreg_in21k_ft_in1k", "augreg_in21k"),
    "vit_small_patch16_224": ("augreg_in21k_ft_in1k", "augreg_in1k", "augreg_in21k", "dino"),
    "vit_small_patch32_224": ("augreg_in21k_ft_in1k", "augreg_in21k"),
    "vit_base_patch8_224": (
        "augreg2_in21k_ft_in1k", "augreg_in21k", "augreg_in21k_ft_in1k", "dino",
    ),
    "vit_base_patch16_224": (
        "augreg2_in21k_ft_in1k", "augreg_in1k", "augreg_in21k", "augreg_in21k_ft_in1k",
        "dino", "mae", "orig_in21k", "orig_in21k_ft_in1k", "sam_in1k",
    ),
    "vit_base_patch32_224": (
        "augreg_in21k_ft_in1k", "augreg_in1k", "augreg_in21k", "orig_in21k", "sam_in1k",
    ),
    "vit_base_patch16_384": ("augreg_in21k_ft_in1k", "augreg_in1k", "orig_in21k_ft_in1k"),
    "vit_large_patch16_224": ("augreg_in21k_ft_in1k", "augreg_in21k", "mae", "orig_in21k"),
    "vit_large_patch16_384": ("augreg_in21k_ft_in1k",),
}  # fmt: skip
IMAGENET_NORMALIZED = ("dino", "mae")
LICENSES = {"mae": "CC-BY-NC-4.0: non-commercial"}


def timm_source(key: str, tag: str) -> pretrained.WeightsSource:
    """timm's `tag` weights of ViT `key`, with their license and normalization."""
    return pretrained.timm_hub_source(
        key,
        tag,
        LICENSES.get(tag, "Apache-2.0 (as timm publishes them)"),
        pretrained.IMAGENET if tag in IMAGENET_NORMALIZED else None,
    )


NORMALIZATIONS = ("weights", "imagenet", None)


def uniform_output_indices(n: int, depth: int) -> list[int]:
    """`n` block indices spread evenly over `depth` blocks, ending at the last (smp's DPT
    default: 4 of 12 -> [2, 5, 8, 11])."""
    return [int(depth / n * k) - 1 for k in range(1, n + 1)]


def check_output_indices(output_indices, depth: int) -> list[int]:
    """Increasing block indices in ``[-depth, depth)`` (negative counts from the end), made
    positive (timm returns a repeated index's block once, which smp's DPT then misaligns)."""
    ok = isinstance(output_indices, (list, tuple)) and len(output_indices) > 0
    ok = ok and all(isinstance(i, int) and not isinstance(i, bool) for i in output_indices)
    positive = [i % depth for i in output_indices] if ok else []
    ok = ok and all(-depth <= i < depth for i in output_indices)
    if not ok or any(a >= b for a, b in zip(positive, positive[1:])):
        raise ValueError(
            f"Invalid value for argument `output_indices`: expected increasing block indices "
            f"in [-{depth}, {depth}) (the encoder has {depth} blocks; negative ones count "
            f"from the end). Received: output_indices={output_indices!r}"
        )
    return positive


def vit_blocks(
    x,
    embed_dim: int,
    depth: int,
    num_heads: int,
    patch_size: int,
    img_size: int,
    mlp_ratio: float = 4.0,
    drop_path_rate: float = 0.0,
    output_indices: Sequence[int] | None = None,
    name: str = "encoder",
) -> tuple[object, list[tuple[object, object]]]:
    """The patch grid of `x` and ``(grid, prefix)`` of each block in `output_indices` (all
    blocks' last when None). Layers: ``{name}_patch_embed``, ``{name}_cls_token``,
    ``{name}_pos_embed``, ``{name}_block{b}_{norm1, attn_qkv, attn, attn_proj, add1, norm2,
    mlp_fc1, mlp_act, mlp_fc2, add2}`` (b from 0, as timm's ``blocks.{b}``)."""
    indices = list(output_indices) if output_indices is not None else [depth - 1]
    patches = keras.layers.Conv2D(
        embed_dim, patch_size, strides=patch_size, name=f"{name}_patch_embed"
    )(x)
    t = ClassToken(name=f"{name}_cls_token")(patches)
    grid = img_size // patch_size
    t = PositionEmbedding((grid, grid), 1, name=f"{name}_pos_embed")([t, patches])
    outputs = {}
    for b in range(max(indices) + 1):
        block = f"{name}_block{b}"
        rate = drop_path_rate * b / max(depth - 1, 1)
        y = keras.layers.LayerNormalization(epsilon=EPSILON, name=f"{block}_norm1")(t)
        y = keras.layers.Dense(3 * embed_dim, name=f"{block}_attn_qkv")(y)
        y = QKVAttention(num_heads, name=f"{block}_attn")(y)
        y = keras.layers.Dense(embed_dim, name=f"{block}_attn_proj")(y)
        if rate > 0:
            y = DropPath(rate, name=f"{block}_drop_path1")(y)
        t = keras.layers.Add(name=f"{block}_add1")([t, y])
        y = keras.layers.LayerNormalization(epsilon=EPSILON, name=f"{block}_norm2")(t)
        y = keras.layers.Dense(int(embed_dim * mlp_ratio), name=f"{block}_mlp_fc1")(y)
        y = GELU(name=f"{block}_mlp_act")(y)
        y = keras.layers.Dense(embed_dim, name=f"{block}_mlp_fc2")(y)
        if rate > 0:
            y = DropPath(rate, name=f"{block}_drop_path2")(y)
        t = keras.layers.Add(name=f"{block}_add2")([t, y])
        if b in indices:
            outputs[b] = TokensToGrid(1, name=f"{block}_grid")([t, patches])
    return patches, [tuple(outputs[i]) for i in indices]


def _vit(encoder, inputs, input_shape, weights, input_normalization, output_indices, name, arch):
    embed_dim, depth, num_heads, patch_size, img_size, mlp_ratio, drop_path_rate = arch
    for key, value in (
        ("embed_dim", embed_dim),
        ("depth", depth),
        ("num_heads", num_heads),
        ("patch_size", patch_size),
        ("img_size", img_size),
    ):
        check_positive_int(key, value)
    check_positive("mlp_ratio", mlp_ratio)
    check_rate("drop_path_rate", drop_path_rate)
    if embed_dim % num_heads:
        raise ValueError(
            f"Invalid value for argument `num_heads`: it must divide embed_dim={embed_dim}. "
            f"Received: num_heads={num_heads!r}"
        )
    if img_size % patch_size:
        raise ValueError(
            f"Invalid value for argument `img_size`: expected a multiple of patch_size="
            f"{patch_size}. Received: img_size={img_size!r}"
        )
    indices = None if output_indices is None else check_output_indices(output_indices, depth)
    if input_normalization not in NORMALIZATIONS:
        raise ValueError(
            "Invalid value for argument `input_normalization`: expected one of "
            f"{NORMALIZATIONS}. Received: input_normalization={input_normalization!r}"
        )
    normalization = pretrained.native_normalization(encoder, weights)
    if input_normalization is None:
        normalization = None
    elif input_normalization == "imagenet":  # e.g. an smp DPT trained on ImageNet statistics
        normalization = pretrained.IMAGENET

    def body(x):
        x = apply_weights_normalization(x, normalization, name)
        _, blocks = vit_blocks(
            x,
            embed_dim,
            depth,
            num_heads,
            patch_size,
            img_size,
            mlp_ratio,
            drop_path_rate,
            indices,
            name,
        )
        features = {patch_size: blocks[-1][0]}
        if indices is not None:
            features["blocks"] = blocks
        flat = [t for pair in blocks for t in pair]
        pretrained.load_native(encoder, weights, x, flat, name, normalization)
        return features

    return run_encoder(inputs, input_shape, name, body)


def _register(key: str) -> None:
    dim, depth, heads, patch, size = VARIANTS[key]

    def builder(
        inputs=None,
        *,
        input_shape: Sequence[int | None] = (None, None, 3),
        embed_dim: int = dim,
        depth: int = depth,
        num_heads: int = heads,
        patch_size: int = patch,
        img_size: int = size,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
        output_indices: Sequence[int] | None = None,
        weights: str | None = None,
        input_normalization: str | None = "weights",
        name: str = "encoder",
    ):
        arch = (embed_dim, depth, num_heads, patch_size, img_size, mlp_ratio, drop_path_rate)
        return _vit(
            key, inputs, input_shape, weights, input_normalization, output_indices, name, arch
        )

    description = (
        f"Vision Transformer (timm {key}: width {dim}, {depth} blocks, {heads} heads, "
        f"{patch}-pixel patches, positions learned at {size}x{size}); plain, stride {patch}; "
        f"timm's weights imagenet (= {TAGS[key][0]}), {', '.join(sorted(TAGS[key][1:]))}."
    )
    builder.__name__ = builder.__qualname__ = key
    builder.__doc__ = (
        f"{description}\n\n"
        "Returns ``{patch_size: grid}`` (plus ``'blocks'`` with `output_indices`) for a tensor,\n"
        "or a `keras.Model` without one (see the module docstring).\n\n"
        "Args:\n"
        "    inputs: image tensor, or None to get a standalone model.\n"
        "    input_shape: shape of the standalone model's input.\n"
        "    embed_dim, depth, num_heads: token width, transformer blocks, attention heads.\n"
        "    patch_size: pixels per patch side (the features' stride).\n"
        "    img_size: the square image size the position embeddings are learned for.\n"
        "    mlp_ratio: MLP hidden width / embed_dim.\n"
        "    drop_path_rate: stochastic depth of the last block (linear from 0).\n"
        "    output_indices: blocks whose outputs `dpt` reads (negative: from the end).\n"
        "    weights: None (random), 'imagenet' (timm's default weights of this variant), a\n"
        "        timm tag of its weights, or a timm / smp DPT checkpoint file of it.\n"
        "    input_normalization: 'weights' (their normalization inside), 'imagenet' (ImageNet's\n"
        "        statistics inside, whatever the weights) or None (the caller normalizes).\n"
        "    name: prefix of every layer name.\n"
    )
    register_encoder(
        key,
        strides=(patch,),
        tiny_config={"embed_dim": 16, "depth": 4, "num_heads": 2, "img_size": 64},
        output_strides=(patch,),
        plain=True,
        pretrained=True,
        description=description,
    )(builder)
    tags = TAGS[key]
    pretrained.register_encoder_weights(
        key,
        table="vit",
        first_conv="patch_embed.proj",
        normalization=NORMALIZATION,
        sources={
            "imagenet": timm_source(key, tags[0]),
            **{tag: timm_source(key, tag) for tag in sorted(tags)},
        },
        layouts=(pretrained.Layout("vit", "patch_embed.proj", prefixes=("encoder.model.",)),),
    )


for _key in VARIANTS:
    _register(_key)
