"""SegFormer: a Mix Transformer (or any registered) encoder and the all-MLP decoder."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from zoo.layers import AllMLPFuse, BilinearUpsampling, batch_norm
from zoo.models.base import (
    SegmentationModel,
    check_activation,
    check_num_classes,
    check_positive_int,
    check_rate,
    encoder_features,
    model_input,
    model_output,
    require_strides,
)
from zoo.registry import register_model

LEVELS = (4, 8, 16, 32)


@register_model(
    "segformer",
    output_stride=32,
    global_context=True,  # MiT attention: every pixel sees the whole image
    tiny_config={
        "encoder": "mit_b0",
        "encoder_kwargs": {
            "embed_dims": (8, 16, 24, 32),
            "depths": (1, 1, 1, 1),
            "num_heads": (1, 1, 1, 1),
            "sr_ratios": (4, 2, 1, 1),
            "drop_path_rate": 0.0,
        },
        "decoder_channels": 16,
    },
    description="SegFormer all-MLP decoder (per-stage linear, upsample to 1/4, fuse) on MiT.",
)
@keras.saving.register_keras_serializable(package="zoo")
class SegFormer(SegmentationModel):
    """SegFormer: hierarchical transformer encoder and the all-MLP decoder.

    The decoder projects every encoder level (strides 4, 8, 16, 32, plus 2 for encoders that
    have it) to `decoder_channels` with a linear layer (a dense layer on the channels),
    resizes each to stride 4 (bilinear, half-pixel centres; a stride-2 level is thereby
    averaged 2x2), concatenates them deepest first, fuses them with a 1x1 conv-BN-ReLU, and a
    1x1 convolution with bias (``head_conv``) gives the stride-4 logits, which a 4x bilinear
    upsampling with aligned corners (``head_upsample``) brings to the input size. The
    projections, resize, concatenation and fuse convolution are one `zoo.layers.AllMLPFuse`
    (``decoder_fuse``): the same function and variables, computed folded (each level's
    projection times its slice of the fuse kernel, applied at the level's resolution): with
    MiT-B0 the fuse costs 32 instead of 1024 multiply-adds per channel at stride 4, and a
    256x256 float32 training step on a CPU took 0.78 instead of 1.77 s (bench/profile_step.py,
    batch 4, shared machine). This is
    segmentation_models_pytorch 0.6's ``Segformer`` layer for layer (same parameters, same
    logits from the same weights); Hugging Face ``transformers``' model has the same encoder
    and decode head and returns the stride-4 logits, available here as the output of layer
    ``head_conv``. The original head has dropout 0.1 before the classifier; smp has none
    (`dropout`).

    Args:
        num_classes: output channels (1 for binary segmentation).
        input_shape: (height, width, channels); height/width may be None.
        encoder: registered encoder with stride 4-32 features (`mit_b0` ... `mit_b5` for
            SegFormer-B0 ... B5).
        encoder_kwargs: keyword arguments of the encoder builder.
        encoder_weights: pretrained encoder weights: None (random) or a source named in
            docs/models.md; read when the model is built, never when a saved model loads.
        decoder_channels: width of the projections and the fused map (256 in the paper for
            B0/B1, 768 for B2-B5; smp uses 256 for all).
        dropout: dropout rate before the classifier, in [0, 1).
        activation: None (logits), "sigmoid" or "softmax".
        pad_to_divisor: pad inputs to a multiple of 32 and crop the logits back.

    Example:

    ```python
    model = zoo.create_model("segformer", num_classes=150, encoder="mit_b2")
    stride4 = keras.Model(model.input, model.get_layer("head_conv").output)
    ```

    Reference:
        Xie et al., "SegFormer: Simple and Efficient Design for Semantic Segmentation with
        Transformers", NeurIPS 2021.
    """

    def __init__(
        self,
        num_classes: int = 1,
        input_shape: Sequence[int | None] = (None, None, 3),
        encoder: str = "mit_b0",
        encoder_kwargs: dict[str, Any] | None = None,
        encoder_weights: str | None = None,
        decoder_channels: int = 256,
        dropout: float = 0.0,
        activation: str | None = None,
        pad_to_divisor: bool = False,
        **kwargs,
    ):
        check_num_classes(num_classes)
        check_activation(activation)
        check_positive_int("decoder_channels", decoder_channels)
        check_rate("dropout", dropout)
        divisor = self.divisor_for(locals())

        # === Encoder ===
        image, x = model_input(input_shape, divisor, pad_to_divisor)
        features = encoder_features(encoder, x, encoder_kwargs, encoder_weights)
        require_strides(features, LEVELS, "segformer", encoder)

        # === All-MLP decoder: every level to stride 4, deepest first ===
        # (projections, resize, concatenation and the fuse conv as one folded layer)
        strides = sorted((s for s in features if s >= 2), reverse=True)
        y = AllMLPFuse(decoder_channels, strides, name="decoder_fuse")(
            [features[s] for s in strides]
        )
        y = batch_norm("decoder_fuse_bn")(y)
        y = keras.layers.Activation("relu", name="decoder_fuse_relu")(y)
        if dropout > 0:
            y = keras.layers.Dropout(dropout, name="decoder_dropout")(y)

        # === Head: stride-4 logits, then to the input size ===
        y = keras.layers.Conv2D(num_classes, 1, name="head_conv", dtype="float32")(y)
        logits = BilinearUpsampling(4, align_corners=True, name="head_upsample")(y)
        outputs = model_output(logits, image, activation, pad_to_divisor)
        super().__init__(inputs=image, outputs=outputs, **{"name": "segformer", **kwargs})

        # === Config ===
        self._init_config(locals())
