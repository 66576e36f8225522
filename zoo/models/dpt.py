"""DPT: a plain vision-transformer encoder reassembled into a pyramid and fused by
convolutions (segmentation_models_pytorch 0.6's ``DPT``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras

from zoo.encoders.vit import uniform_output_indices
from zoo.layers import GELU, BilinearUpsampling, PrefixTokenReadout, batch_norm
from zoo.models.base import (
    SegmentationModel,
    check_activation,
    check_channels,
    check_num_classes,
    check_positive_int,
    check_rate,
    encoder_features,
    model_input,
    model_output,
)
from zoo.registry import encoder_info, list_encoders, register_model

READOUTS = ("cat", "add", "ignore")


def plain_encoders() -> list[str]:
    """Registered encoders whose blocks share one stride (vision transformers)."""
    return [e for e in list_encoders() if encoder_info(e).metadata.get("plain")]


def _conv(x, filters: int, kernel: int, name: str, strides: int = 1, use_bias: bool = True):
    """PyTorch's ``Conv2d(kernel, stride, padding=kernel // 2)``: symmetric zero padding,
    which Keras' "same" is not for strided convolutions."""
    if strides > 1:
        x = keras.layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
        padding = "valid"
    else:
        padding = "same"
    return keras.layers.Conv2D(
        filters, kernel, strides=strides, padding=padding, use_bias=use_bias, name=name
    )(x)


def _residual_conv_block(x, channels: int, name: str):
    """``x + BN(conv(ReLU(BN(conv(ReLU(x))))))``, 3x3 convolutions without bias."""
    y = x
    for i in (1, 2):
        y = keras.layers.ReLU(name=f"{name}_relu{i}")(y)
        y = _conv(y, channels, 3, f"{name}_conv{i}", use_bias=False)
        y = batch_norm(f"{name}_bn{i}")(y)
    return keras.layers.Add(name=f"{name}_add")([x, y])


@register_model(
    "dpt",
    output_stride=32,
    global_context=True,  # ViT attention: every pixel sees the whole image
    tiny_learning_rate=1e-3,  # a ViT from scratch collapses to one class at 1e-2
    tiny_config={
        "encoder": "vit_tiny_patch16_224",
        "encoder_kwargs": {"embed_dim": 16, "depth": 4, "num_heads": 2, "img_size": 64},
        "decoder_intermediate_channels": (8, 16, 16, 16),
        "decoder_fusion_channels": 16,
    },
    description="DPT: ViT blocks reassembled at strides 4-32, fused by residual conv units.",
)
@keras.saving.register_keras_serializable(package="zoo")
class DPT(SegmentationModel):
    """Dense Prediction Transformer: a vision transformer's blocks as a feature pyramid.

    The encoder (a plain ViT, `vit_*`) keeps one stride, its patch size, in every block.
    `encoder_depth` of its blocks (`encoder_output_indices`, by default spread evenly and
    ending at the last) are read; each is *read out* (``"cat"``: the class token appended to
    every position's channels and projected back with a linear layer and GELU; ``"add"``: the
    class tokens' mean added; ``"ignore"``), *reassembled* (a 1x1 convolution to
    ``decoder_intermediate_channels[i]``, resampled to stride ``4 * 2**i`` by a transposed
    convolution, nothing, or a strided 3x3 convolution, then a 3x3 convolution to
    `decoder_fusion_channels`) and *fused* deepest first: two residual conv units with the
    running sum added between them, a 2x bilinear upsampling (aligned corners) and a 1x1
    convolution per level (computed in the other order, before the upsampling: the same
    function on a quarter of the pixels). The head (3x3 conv-BN-ReLU, dropout, 1x1
    convolution) gives logits at stride 2, bilinearly upsampled to the input. This is
    segmentation_models_pytorch 0.6's ``DPT`` layer for layer: the same logits from the
    same weights (``python -m zoo.port smp --model dpt``), the same parameters except the
    timm encoder's unused final norm and classifier, which this encoder does not build.

    Args:
        num_classes: output channels (1 for binary segmentation).
        input_shape: (height, width, channels); height/width may be None.
        encoder: a plain (ViT) encoder, one of `plain_encoders()`.
        encoder_kwargs: keyword arguments of the encoder builder.
        encoder_weights: None or a timm / smp DPT checkpoint file of the encoder.
        encoder_depth: how many blocks are read, 1-4 (their strides 4, 8, 16, 32 after
            reassembly).
        encoder_output_indices: which blocks (None: evenly spread, ending at the last).
        decoder_readout: "cat", "add" or "ignore": how the class token enters.
        decoder_intermediate_channels: reassembly widths, one per read block.
        decoder_fusion_channels: width of the fusion path and the head.
        dropout: dropout before the classifier (smp: 0.1).
        activation: None (logits), "sigmoid" or "softmax".
        pad_to_divisor: pad inputs to the divisor and crop the logits back.

    Example:

    ```python
    model = zoo.create_model("dpt", num_classes=2, encoder="vit_small_patch16_224",
                             input_shape=(224, 224, 3))
    ```

    Reference:
        Ranftl, Bochkovskiy and Koltun, "Vision Transformers for Dense Prediction", ICCV 2021.
    """

    @classmethod
    def divisor_for(cls, config: dict[str, Any] | None = None) -> int:
        """The patch size and the deepest reassembled stride ``2**(depth + 1)``, both."""
        args = cls.arguments(config)
        patch = (args.get("encoder_kwargs") or {}).get("patch_size")
        if patch is None:
            builder = encoder_info(args["encoder"]).obj
            patch = builder.__kwdefaults__.get("patch_size", 16)
        return math.lcm(int(patch), 2 ** (int(args["encoder_depth"]) + 1))

    def __init__(
        self,
        num_classes: int = 1,
        input_shape: Sequence[int | None] = (None, None, 3),
        encoder: str = "vit_base_patch16_224",
        encoder_kwargs: dict[str, Any] | None = None,
        encoder_weights: str | None = None,
        encoder_depth: int = 4,
        encoder_output_indices: Sequence[int] | None = None,
        decoder_readout: str = "cat",
        decoder_intermediate_channels: Sequence[int] = (256, 512, 1024, 1024),
        decoder_fusion_channels: int = 256,
        dropout: float = 0.1,
        activation: str | None = None,
        pad_to_divisor: bool = False,
        **kwargs,
    ):
        check_num_classes(num_classes)
        check_activation(activation)
        check_rate("dropout", dropout)
        check_positive_int("decoder_fusion_channels", decoder_fusion_channels)
        if isinstance(encoder, str):
            encoder_info(encoder)  # an unknown name raises with the registered choices
        if encoder not in plain_encoders():
            raise ValueError(
                "Invalid value for argument `encoder`: DPT reads blocks of a plain vision "
                f"transformer, one of {plain_encoders()}. Received: encoder={encoder!r}"
            )
        if isinstance(encoder_depth, bool) or encoder_depth not in (1, 2, 3, 4):
            raise ValueError(
                "Invalid value for argument `encoder_depth`: expected 1, 2, 3 or 4. "
                f"Received: encoder_depth={encoder_depth!r}"
            )
        if decoder_readout not in READOUTS:
            raise ValueError(
                f"Invalid value for argument `decoder_readout`: expected one of {READOUTS}. "
                f"Received: decoder_readout={decoder_readout!r}"
            )
        widths = check_channels("decoder_intermediate_channels", decoder_intermediate_channels)
        if len(widths) != encoder_depth:
            raise ValueError(
                "Invalid value for argument `decoder_intermediate_channels`: expected one "
                f"width per read block (encoder_depth={encoder_depth}). "
                f"Received: decoder_intermediate_channels={decoder_intermediate_channels!r}"
            )
        enc_kwargs = dict(encoder_kwargs or {})
        if "output_indices" in enc_kwargs:
            raise ValueError(
                "Set the blocks DPT reads with `encoder_output_indices`, not "
                f"encoder_kwargs['output_indices']={enc_kwargs['output_indices']!r}"
            )
        depth = enc_kwargs.get("depth", encoder_info(encoder).obj.__kwdefaults__["depth"])
        if isinstance(depth, int) and depth < encoder_depth:
            raise ValueError(
                f"Invalid value for argument `encoder_depth`: DPT reads {encoder_depth} blocks "
                f"and the encoder has {depth}. Received: encoder_depth={encoder_depth!r}"
            )
        indices = encoder_output_indices
        if indices is None:
            indices = uniform_output_indices(encoder_depth, depth)
        elif not isinstance(indices, (list, tuple)) or len(indices) != encoder_depth:
            raise ValueError(
                "Invalid value for argument `encoder_output_indices`: expected None or "
                f"{encoder_depth} block indices (encoder_depth). "
                f"Received: encoder_output_indices={encoder_output_indices!r}"
            )
        divisor = self.divisor_for(locals())

        # === Encoder: the read blocks as (grid, class token) at the patch stride ===
        image, x = model_input(input_shape, divisor, pad_to_divisor)
        enc_kwargs["output_indices"] = list(indices)
        features = encoder_features(encoder, x, enc_kwargs, encoder_weights)
        (patch,) = [s for s in features if isinstance(s, int)]

        # === Read out and reassemble: block i to stride 4 * 2**i ===
        levels = []
        for i, ((grid, prefix), mid) in enumerate(zip(features["blocks"], widths)):
            name = f"decoder_reassemble{i}"
            y = grid
            if decoder_readout == "cat":
                y = PrefixTokenReadout("cat", name=f"decoder_readout{i}")([y, prefix])
                y = keras.layers.Dense(grid.shape[-1], name=f"decoder_readout{i}_project")(y)
                y = GELU(name=f"decoder_readout{i}_act")(y)
            elif decoder_readout == "add":
                y = PrefixTokenReadout("add", name=f"decoder_readout{i}")([y, prefix])
            y = keras.layers.Conv2D(mid, 1, name=f"{name}_project")(y)
            target = 4 * 2**i
            if target < patch:
                y = keras.layers.Conv2DTranspose(
                    mid, patch // target, strides=patch // target, name=f"{name}_resample"
                )(y)
            elif target > patch:
                y = _conv(y, mid, 3, f"{name}_resample", strides=target // patch)
            y = _conv(y, decoder_fusion_channels, 3, f"{name}_conv", use_bias=False)
            levels.append(y)

        # === Fusion, deepest first: each level to twice its resolution ===
        fused = None
        for j, y in enumerate(reversed(levels)):
            name = f"decoder_fusion{j}"
            y = _residual_conv_block(y, decoder_fusion_channels, f"{name}_res1")
            if fused is not None:
                y = keras.layers.Add(name=f"{name}_add")([y, fused])
            y = _residual_conv_block(y, decoder_fusion_channels, f"{name}_res2")
            # smp upsamples, then projects; both are linear and the bilinear weights sum to
            # one, so projecting first is the same function at a quarter of the pixels.
            y = keras.layers.Conv2D(decoder_fusion_channels, 1, name=f"{name}_project")(y)
            # In the compute dtype (not float32 as a model's final upsampling): the next
            # convolution reads it in that dtype anyway, and the casts of these large maps
            # cost 3% of a bfloat16 inference.
            fused = BilinearUpsampling(
                2, align_corners=True, name=f"{name}_upsample", dtype=keras.config.dtype_policy()
            )(y)

        # === Head: stride-2 logits, then to the input size ===
        y = _conv(fused, decoder_fusion_channels, 3, "head_conv1", use_bias=False)
        y = batch_norm("head_bn")(y)
        y = keras.layers.ReLU(name="head_relu")(y)
        if dropout > 0:
            y = keras.layers.Dropout(dropout, name="head_dropout")(y)
        y = keras.layers.Conv2D(num_classes, 1, name="head_conv", dtype="float32")(y)
        logits = BilinearUpsampling(2, align_corners=True, name="head_upsample")(y)
        outputs = model_output(logits, image, activation, pad_to_divisor)
        super().__init__(inputs=image, outputs=outputs, **{"name": "dpt", **kwargs})

        # === Config ===
        self._init_config(locals())
