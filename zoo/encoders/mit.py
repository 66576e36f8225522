"""Native Mix Transformer (MiT-B0 ... B5) encoders, the SegFormer backbones.

Four stages; each opens with an overlapping patch embedding (7x7 / 4, then 3x3 / 2 conv + layer
norm) and stacks transformer blocks ``x + Attn(LN(x))``, ``x + MixFFN(LN(x))`` whose attention
shrinks keys and values by ``sr_ratio`` (8, 4, 2, 1) and whose feed-forward has a depthwise
3x3 convolution instead of position embeddings; a layer norm closes each stage. Stage outputs
are the features at strides 4, 8, 16 and 32 (there is no stride-2 level). Layouts, widths,
depths and layer-norm epsilons follow the original implementation and smp's ``mit_b*``
encoders (block and stage norms 1e-6, patch-embedding and reduction norms 1e-5), so parameter
counts equal smp's and ported checkpoints reproduce their features.

Pretrained weights (`weights` / a model's `encoder_weights`): ``"imagenet"`` (the original
ImageNet-1k weights as segmentation_models_pytorch publishes them, ``smp-hub/mit_b*.imagenet``)
or a local checkpoint in the smp / original or the Hugging Face transformers layout
(`zoo/port/tables/mit.py`); their ImageNet normalization then goes inside the graph.

Reference:
    Xie et al., "SegFormer: Simple and Efficient Design for Semantic Segmentation with
    Transformers", NeurIPS 2021.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from zoo import pretrained
from zoo.encoders._common import apply_weights_normalization, run_encoder
from zoo.layers import (
    DropPath,
    EfficientSelfAttention,
    MixFFN,
    OverlapPatchEmbedding,
)
from zoo.registry import register_encoder

BLOCK_EPSILON = 1e-6  # block and stage layer norms (the embedding/reduction ones use 1e-5)

# (embed_dims, depths) per variant; heads (1, 2, 5, 8), sr_ratios (8, 4, 2, 1), MLP ratio 4.
VARIANTS = {
    "mit_b0": ((32, 64, 160, 256), (2, 2, 2, 2)),
    "mit_b1": ((64, 128, 320, 512), (2, 2, 2, 2)),
    "mit_b2": ((64, 128, 320, 512), (3, 4, 6, 3)),
    "mit_b3": ((64, 128, 320, 512), (3, 4, 18, 3)),
    "mit_b4": ((64, 128, 320, 512), (3, 8, 27, 3)),
    "mit_b5": ((64, 128, 320, 512), (3, 6, 40, 3)),
}
NORMALIZATIONS = ("weights", None)  # input_normalization
# segmentation_models_pytorch 0.6's pinned revisions of its MiT ImageNet files (the original
# NVlabs weights; smp-hub/mit_b*.imagenet, model.safetensors).
SMP_HUB_REVISIONS = {
    "mit_b0": "9ce53d104d92d75aabb00aae70677aaab67e7c84",
    "mit_b1": "a04bf4f13a549bce677cf79b04852e7510782817",
    "mit_b2": "868ab6f13871dcf8c3d9f90ee4519403475b65ef",
    "mit_b3": "32558d12a65f1daa0ebcf4f4053c4285e2c1cbda",
    "mit_b4": "3a3454e900a4b4f11dd60eeb59101a9a1a36b017",
    "mit_b5": "ced04d96c586b6297fd59a7a1e244fc78fdb6531",
}
LICENSE = "NVIDIA Source Code License for SegFormer (non-commercial use only)"
NUM_HEADS = (1, 2, 5, 8)
SR_RATIOS = (8, 4, 2, 1)
# Smp's trainable parameter counts of the encoders (no classifier), for the docs table.
PARAMS = {
    "mit_b0": 3_319_392,
    "mit_b1": 13_151_424,
    "mit_b2": 24_196_288,
    "mit_b3": 44_072_128,
    "mit_b4": 60_842_688,
    "mit_b5": 81_443_008,
}


def _four_positive_ints(name: str, value) -> tuple[int, ...]:
    ok = isinstance(value, (list, tuple)) and len(value) == 4
    ok = ok and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    if not ok:
        raise ValueError(
            f"Invalid value for argument `{name}`: expected 4 positive integers, one per stage. "
            f"Received: {name}={value!r}"
        )
    return tuple(value)


def mix_transformer_features(
    x,
    embed_dims: Sequence[int],
    depths: Sequence[int],
    num_heads: Sequence[int] = NUM_HEADS,
    sr_ratios: Sequence[int] = SR_RATIOS,
    mlp_ratio: float = 4.0,
    drop_path_rate: float = 0.1,
    name: str = "encoder",
) -> dict:
    """Mix Transformer feature maps ``{4: ..., 8: ..., 16: ..., 32: ...}`` of `x`.

    Layers are named ``{name}_stage{s}_patch_embed``, ``{name}_stage{s}_block{b}_{norm1,
    attn, drop_path1, add1, norm2, mlp, drop_path2, add2}`` and ``{name}_stage{s}_norm``
    (s, b from 1). The stochastic-depth rate grows linearly from 0 (first block) to
    `drop_path_rate` (last block); blocks with rate 0 have no `DropPath` layer.
    """
    total = sum(depths)
    rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
    features, index = {}, 0
    for s, (dim, depth, heads, sr) in enumerate(zip(embed_dims, depths, num_heads, sr_ratios)):
        stage = f"{name}_stage{s + 1}"
        x = OverlapPatchEmbedding(
            dim, patch_size=7 if s == 0 else 3, strides=4 if s == 0 else 2,
            name=f"{stage}_patch_embed",
        )(x)  # fmt: skip
        for b in range(depth):
            block = f"{stage}_block{b + 1}"
            rate = rates[index]
            index += 1
            y = keras.layers.LayerNormalization(epsilon=BLOCK_EPSILON, name=f"{block}_norm1")(x)
            y = EfficientSelfAttention(heads, sr_ratio=sr, name=f"{block}_attn")(y)
            if rate > 0:
                y = DropPath(rate, name=f"{block}_drop_path1")(y)
            x = keras.layers.Add(name=f"{block}_add1")([x, y])
            y = keras.layers.LayerNormalization(epsilon=BLOCK_EPSILON, name=f"{block}_norm2")(x)
            y = MixFFN(int(dim * mlp_ratio), name=f"{block}_mlp")(y)
            if rate > 0:
                y = DropPath(rate, name=f"{block}_drop_path2")(y)
            x = keras.layers.Add(name=f"{block}_add2")([x, y])
        x = keras.layers.LayerNormalization(epsilon=BLOCK_EPSILON, name=f"{stage}_norm")(x)
        features[4 * 2**s] = x
    return features


def _mit(
    encoder,
    inputs,
    input_shape,
    weights,
    input_normalization,
    output_stride,
    name,
    embed_dims,
    depths,
    num_heads,
    sr_ratios,
    mlp_ratio,
    drop_path_rate,
):
    embed_dims = _four_positive_ints("embed_dims", embed_dims)
    depths = _four_positive_ints("depths", depths)
    num_heads = _four_positive_ints("num_heads", num_heads)
    sr_ratios = _four_positive_ints("sr_ratios", sr_ratios)
    bad = [(d, h) for d, h in zip(embed_dims, num_heads) if d % h]
    if bad:
        raise ValueError(
            f"Invalid value for argument `num_heads`: each stage's heads must divide its "
            f"embed_dims ({embed_dims}). Received: num_heads={num_heads!r}"
        )
    if isinstance(mlp_ratio, bool) or not isinstance(mlp_ratio, (int, float)) or mlp_ratio <= 0:
        raise ValueError(
            "Invalid value for argument `mlp_ratio`: expected a positive number. "
            f"Received: mlp_ratio={mlp_ratio!r}"
        )
    if (
        isinstance(drop_path_rate, bool)
        or not isinstance(drop_path_rate, (int, float))
        or not 0 <= drop_path_rate < 1
    ):
        raise ValueError(
            "Invalid value for argument `drop_path_rate`: expected a rate in [0, 1). "
            f"Received: drop_path_rate={drop_path_rate!r}"
        )
    if input_normalization not in NORMALIZATIONS:
        raise ValueError(
            "Invalid value for argument `input_normalization`: expected one of "
            f"{NORMALIZATIONS}. Received: input_normalization={input_normalization!r}"
        )
    if output_stride != 32:
        raise ValueError(
            "Invalid value for argument `output_stride`: Mix Transformer encoders support only "
            f"32 (no dilated variant). Received: output_stride={output_stride!r}"
        )
    # Pretrained weights bring their normalization into the graph; random weights keep the
    # plain graph (configs without weights build what they always built).
    normalization = pretrained.native_normalization(encoder, weights)
    if input_normalization is None:
        normalization = None

    def body(x):
        x = apply_weights_normalization(x, normalization, name)
        features = mix_transformer_features(
            x, embed_dims, depths, num_heads, sr_ratios, mlp_ratio, drop_path_rate, name
        )
        pretrained.load_native(encoder, weights, x, features, name, normalization)
        return features

    return run_encoder(inputs, input_shape, name, body)


# Reductions (4, 2, 1, 1): at 32x32 inputs (the distribution tests) every stage but the last
# still attends over 4 keys; with (8, 4, 2, 1) each has 1, and queries/keys get no gradient.
_TINY = {
    "embed_dims": (8, 16, 24, 32),
    "depths": (1, 1, 1, 1),
    "num_heads": (1, 1, 1, 1),
    "sr_ratios": (4, 2, 1, 1),
    "drop_path_rate": 0.0,
}


def _register(key: str) -> None:
    dims, depths = VARIANTS[key]

    def builder(
        inputs=None,
        *,
        input_shape: Sequence[int | None] = (None, None, 3),
        embed_dims: Sequence[int] = dims,
        depths: Sequence[int] = depths,
        num_heads: Sequence[int] = NUM_HEADS,
        sr_ratios: Sequence[int] = SR_RATIOS,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.1,
        weights: str | None = None,
        input_normalization: str | None = "weights",
        output_stride: int = 32,
        name: str = "encoder",
    ):
        return _mit(
            key,
            inputs,
            input_shape,
            weights,
            input_normalization,
            output_stride,
            name,
            embed_dims,
            depths,
            num_heads,
            sr_ratios,
            mlp_ratio,
            drop_path_rate,
        )

    variant = key.split("_")[1].upper()
    description = (
        f"Mix Transformer {variant} (SegFormer encoder, widths {list(dims)}, depths "
        f"{list(depths)}), {PARAMS[key] / 1e6:.1f}M params."
    )
    builder.__name__ = builder.__qualname__ = key
    builder.__doc__ = (
        f"{description}\n\n"
        "Returns ``{stride: features}`` (strides 4, 8, 16, 32) for a tensor, or a\n"
        "`keras.Model` without one.\n\n"
        "Args:\n"
        "    inputs: image tensor, or None to get a standalone model.\n"
        "    input_shape: shape of the standalone model's input.\n"
        "    embed_dims: channels of the four stages.\n"
        "    depths: transformer blocks per stage.\n"
        "    num_heads: attention heads per stage (must divide embed_dims).\n"
        "    sr_ratios: key/value spatial reduction per stage.\n"
        "    mlp_ratio: Mix-FFN hidden width / channels.\n"
        "    drop_path_rate: stochastic depth of the last block (linear from 0); 0 disables.\n"
        "    weights: None (random), 'imagenet' (the original ImageNet-1k weights from\n"
        "        smp-hub, non-commercial license) or the path of an smp / original or\n"
        "        Hugging Face transformers checkpoint (.safetensors, .pth, .bin; a whole\n"
        "        Segformer's file gives its encoder). Pretrained weights bring their ImageNet\n"
        "        normalization into the graph (inputs stay in [0, 1]); other than 3 input\n"
        "        channels adapt the first conv (1 channel: the image is seen as RGB).\n"
        "    input_normalization: 'weights' (the weights' normalization inside the model,\n"
        "        none for random weights) or None (the caller normalizes).\n"
        "    output_stride: only 32 (accepted so that every decoder can pass it).\n"
        "    name: prefix of every layer name.\n"
    )
    register_encoder(
        key,
        strides=(4, 8, 16, 32),
        tiny_config=dict(_TINY),
        output_strides=(32,),
        pretrained=True,
        description=description,
    )(builder)
    revision = SMP_HUB_REVISIONS[key]
    pretrained.register_encoder_weights(
        key,
        table="mit",
        first_conv="patch_embed1.proj",
        normalization=pretrained.IMAGENET,
        sources={
            "imagenet": pretrained.smp_hub_source(
                key,
                "imagenet",
                revision,
                description=(
                    f"the original (NVlabs SegFormer) ImageNet-1k {key} weights as "
                    f"segmentation_models_pytorch publishes them (smp-hub/{key}.imagenet)"
                ),
                license=LICENSE,
            )
        },
        layouts=(
            pretrained.Layout(
                "mit.transformers",
                "patch_embeddings.0.proj",
                prefixes=("encoder.", "segformer.encoder."),
            ),
        ),
    )


for _key in VARIANTS:
    _register(_key)
