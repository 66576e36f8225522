"""UPerNet: pyramid pooling on the deepest map plus an FPN, fused at stride 4."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from zoo.checks import check_bool
from zoo.layers import BilinearUpsampling, conv_bn_act, pyramid_pooling
from zoo.models.base import (
    SegmentationModel,
    aux_head,
    check_activation,
    check_deep_supervision,
    check_num_classes,
    check_positive_int,
    encoder_features,
    model_input,
    model_output,
    require_strides,
    with_aux,
)
from zoo.registry import register_model

LEVELS = (4, 8, 16, 32)
POOL_SIZES = (1, 2, 3, 6)


def _resize(x, reference, name: str):
    # align_corners=False as in smp; float32 (the layer's default): TF 2.21's XLA rejects
    # bfloat16 bilinear gradients.
    return BilinearUpsampling(None, name=name)([x, reference])


@register_model(
    "upernet",
    global_context=True,  # pyramid pooling: every pixel sees the whole image
    output_stride=32,
    tiny_config={
        "encoder": "resnet18",
        "encoder_kwargs": {"base_width": 8},
        "decoder_channels": 16,
    },
    description="UPerNet: PPM on the stride-32 map + FPN, all levels fused at stride 4.",
)
@keras.saving.register_keras_serializable(package="zoo")
class UPerNet(SegmentationModel):
    """UPerNet with the layout of segmentation_models_pytorch's ``UPerNet``.

    The encoder's stride 4-32 maps are first layer-normalized over channels (smp's
    ``LayerNorm2d``, epsilon 1e-6; `feature_norm`). The stride-32 map goes through a pyramid
    pooling module (adaptive average pooling to 1, 2, 3, 6 bins, 1x1 conv-BN-ReLU, bilinear
    resize back; concatenated after the map and fused by a 3x3 conv-BN-ReLU). A top-down
    FPN adds 1x1 conv-BN-ReLU laterals of the stride 16, 8 and 4 maps to the bilinearly
    upsampled coarser level and smooths each with a 3x3 conv-BN-ReLU. All four levels are
    resized to stride 4, concatenated (finest first) and fused by a 3x3 conv-BN-ReLU; a 1x1
    conv with bias and a 4x bilinear upsampling (align_corners=True) give the logits.
    Bilinear resizes inside the decoder use half-pixel centres (align_corners=False).

    The feature norms come from smp's transformer-encoder design; the paper's UPerNet on a
    ResNet has none: ``feature_norm=False`` drops them (1,920 fewer parameters with
    `resnet34`).

    With the defaults, `resnet34` and one class: 29,599,681 trainable parameters, smp 0.6's
    count (tested).

    Args:
        num_classes: output channels (1 for binary segmentation).
        input_shape: (height, width, channels); height/width may be None.
        encoder: registered encoder name with stride 4, 8, 16 and 32 maps.
        encoder_kwargs: keyword arguments of the encoder builder.
        encoder_weights: pretrained encoder weights: None (random) or a source named in
            docs/models.md; read when the model is built, never when a saved model loads.
        decoder_channels: channels of the PPM, FPN and fusion convs.
        feature_norm: layer-normalize the encoder maps first (smp), see above.
        deep_supervision: also output auxiliary logits (`head_aux_<k>`, a 1x1 conv) of the
            four FPN levels (after their smoothing convs; stride 32: the PPM output): the
            outputs are ``[logits, aux_1 (stride 4), aux_2 (8), aux_3 (16), aux_4 (32)]``.
            Off: the graph and parameters are exactly those without it.
        activation: None (logits), "sigmoid" or "softmax".
        pad_to_divisor: pad inputs to a multiple of 32 and crop the logits back.

    Example:

    ```python
    model = zoo.create_model("upernet", num_classes=150, input_shape=(512, 512, 3))
    ```

    Reference:
        Xiao et al., "Unified Perceptual Parsing for Scene Understanding", ECCV 2018.
    """

    divisor = 32
    supports_deep_supervision = True

    @classmethod
    def aux_levels(cls, args: dict[str, Any]) -> int:
        return len(LEVELS)

    def __init__(
        self,
        num_classes: int = 1,
        input_shape: Sequence[int | None] = (None, None, 3),
        encoder: str = "resnet34",
        encoder_kwargs: dict[str, Any] | None = None,
        encoder_weights: str | None = None,
        decoder_channels: int = 256,
        feature_norm: bool = True,
        deep_supervision: bool = False,
        activation: str | None = None,
        pad_to_divisor: bool = False,
        **kwargs,
    ):
        check_num_classes(num_classes)
        check_activation(activation)
        check_positive_int("decoder_channels", decoder_channels)
        check_bool("feature_norm", feature_norm)
        check_deep_supervision(deep_supervision)
        divisor = self.divisor_for(locals())

        # === Encoder ===
        image, x = model_input(input_shape, divisor, pad_to_divisor)
        features = encoder_features(encoder, x, encoder_kwargs, encoder_weights)
        require_strides(features, LEVELS, "upernet", encoder)
        maps = [features[s] for s in LEVELS]
        if feature_norm:
            maps = [
                keras.layers.LayerNormalization(epsilon=1e-6, name=f"decoder_feature_norms_{i}")(m)
                for i, m in enumerate(maps)
            ]

        # === Pyramid pooling on the deepest map ===
        deepest = maps[-1]
        branches = pyramid_pooling(
            deepest, POOL_SIZES, decoder_channels, "decoder_psp", align_corners=False
        )
        y = keras.layers.Concatenate(name="decoder_psp_concat")([deepest, *branches])
        top = conv_bn_act(y, decoder_channels, 3, "decoder_psp_out_conv")

        # === FPN (stride 16, 8, 4) ===
        levels = [top]
        for i, lateral in enumerate(reversed(maps[:-1])):
            name = f"decoder_fpn_lateral_blocks_{i}"
            lateral = conv_bn_act(lateral, decoder_channels, 1, name)
            state = _resize(levels[-1], lateral, f"{name}_upsample")
            levels.append(keras.layers.Add(name=f"{name}_add")([state, lateral]))
        for i in range(1, len(levels)):
            levels[i] = conv_bn_act(
                levels[i], decoder_channels, 3, f"decoder_fpn_conv_blocks_{i - 1}"
            )

        # === Fusion at stride 4 ===
        finest = levels[-1]
        resized = [finest] + [
            _resize(level, finest, f"decoder_fusion_resize{i}")
            for i, level in reversed(list(enumerate(levels[:-1])))
        ]
        y = keras.layers.Concatenate(name="decoder_fusion_concat")(resized)
        y = conv_bn_act(y, decoder_channels, 3, "decoder_fusion_block")

        # === Head ===
        y = keras.layers.Conv2D(num_classes, 1, name="head_conv", dtype="float32")(y)
        logits = BilinearUpsampling(4, align_corners=True, name="head_upsample")(y)
        outputs = model_output(logits, image, activation, pad_to_divisor)
        if deep_supervision:  # finest first: the stride-4 level is aux 1
            aux = [aux_head(y, num_classes, k) for k, y in enumerate(reversed(levels), 1)]
            outputs = with_aux(outputs, aux, deep_supervision)
        super().__init__(inputs=image, outputs=outputs, **{"name": "upernet", **kwargs})

        # === Config ===
        self._init_config(locals())
