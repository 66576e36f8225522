"""FPN: the Panoptic-FPN semantic segmentation head on a registered encoder."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from zoo.layers import BilinearUpsampling, conv_bn_act
from zoo.models.base import (
    SegmentationModel,
    aux_head,
    check_activation,
    check_deep_supervision,
    check_num_classes,
    check_positive_int,
    check_rate,
    encoder_features,
    model_input,
    model_output,
    require_strides,
    with_aux,
)
from zoo.registry import register_model

MERGES = ("add", "concat")
LEVELS = (4, 8, 16, 32)
NORMS = ("batch", "group")
GROUPS = 32  # GroupNorm groups (the paper's and segmentation_models_pytorch's choice)


@register_model(
    "fpn",
    output_stride=32,
    tiny_config={
        "encoder": "resnet18",
        "encoder_kwargs": {"base_width": 8},
        "pyramid_channels": 16,
        "segmentation_channels": 8,
    },
    description="Panoptic-FPN semantic head (lateral 1x1, top-down add, merge at stride 4).",
)
@keras.saving.register_keras_serializable(package="zoo")
class FPN(SegmentationModel):
    """Feature Pyramid Network with the Panoptic-FPN semantic segmentation head.

    Lateral 1x1 convs bring the encoder's stride 4-32 features to `pyramid_channels`; a
    top-down pathway adds each level to the 2x (nearest) upsampled coarser one. Each pyramid
    level then goes through 3x3 conv-BN-ReLU (+ 2x upsampling) stages until stride 4, with
    `segmentation_channels` channels (one stage for P4, three for P32). The levels are merged
    (sum or concatenation), spatially dropped out, projected to the classes by a 1x1 conv
    and upsampled 4x (bilinear). The paper uses GroupNorm; by default we use the zoo's
    synchronized BatchNorm, which gives the same cross-replica behaviour for less compute.
    ``decoder_norm="group", align_corners=True`` is segmentation_models_pytorch's FPN
    exactly (GroupNorm with 32 groups, corner-aligned bilinear upsampling), so its
    checkpoints port (`python -m zoo.port smp`).

    Args:
        num_classes: output channels (1 for binary segmentation).
        input_shape: (height, width, channels); height/width may be None.
        encoder: registered encoder name with stride 4, 8, 16 and 32 features.
        encoder_kwargs: keyword arguments of the encoder builder.
        encoder_weights: pretrained encoder weights: None (random) or a source named in
            docs/models.md; read when the model is built, never when a saved model loads.
        pyramid_channels: channels of the lateral/top-down pathway.
        segmentation_channels: channels of the per-level upsampling stages.
        merge: "add" or "concat" (the latter gives 4 * segmentation_channels).
        dropout: spatial dropout rate before the head, in [0, 1).
        decoder_norm: "batch" (synchronized BatchNorm) or "group" (GroupNorm, 32 groups:
            `segmentation_channels` must be a multiple of 32) after each stage conv.
        align_corners: bilinear upsampling with corners aligned (PyTorch's
            ``align_corners=True``) instead of Keras' half-pixel centers.
        deep_supervision: also output auxiliary logits (`head_aux_<k>`, a 1x1 conv) of the
            pyramid levels P4, P8, P16 and P32: the outputs are ``[logits, aux_1 (stride
            4), aux_2 (8), aux_3 (16), aux_4 (32)]``. Off: the graph and parameters are
            exactly those without it.
        activation: None (logits), "sigmoid" or "softmax".
        pad_to_divisor: pad inputs to a multiple of 32 and crop the logits back.

    Example:

    ```python
    model = zoo.create_model("fpn", num_classes=5, input_shape=(256, 256, 3))
    ```

    Reference:
        Kirillov et al., "Panoptic Feature Pyramid Networks", CVPR 2019.
    """

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
        pyramid_channels: int = 256,
        segmentation_channels: int = 128,
        merge: str = "add",
        dropout: float = 0.2,
        decoder_norm: str = "batch",
        align_corners: bool = False,
        deep_supervision: bool = False,
        activation: str | None = None,
        pad_to_divisor: bool = False,
        **kwargs,
    ):
        check_num_classes(num_classes)
        check_activation(activation)
        check_positive_int("pyramid_channels", pyramid_channels)
        check_positive_int("segmentation_channels", segmentation_channels)
        if merge not in MERGES:
            raise ValueError(
                f"Invalid value for argument `merge`: expected one of {MERGES}. "
                f"Received: merge={merge!r}"
            )
        check_rate("dropout", dropout)
        if decoder_norm not in NORMS:
            raise ValueError(
                f"Invalid value for argument `decoder_norm`: expected one of {NORMS}. "
                f"Received: decoder_norm={decoder_norm!r}"
            )
        if decoder_norm == "group" and segmentation_channels % GROUPS:
            raise ValueError(
                f"Invalid value for argument `segmentation_channels`: decoder_norm='group' "
                f"needs a multiple of {GROUPS}. Received: segmentation_channels="
                f"{segmentation_channels!r}"
            )
        if not isinstance(align_corners, bool):
            raise ValueError(
                "Invalid value for argument `align_corners`: expected True or False. "
                f"Received: align_corners={align_corners!r}"
            )
        check_deep_supervision(deep_supervision)
        divisor = self.divisor_for(locals())

        def upsample(y, factor, name):
            # float32 (the layer's default): TF 2.21's XLA rejects a bfloat16 bilinear resize.
            return BilinearUpsampling(factor, align_corners=align_corners, name=name)(y)

        # === Encoder ===
        image, x = model_input(input_shape, divisor, pad_to_divisor)
        features = encoder_features(encoder, x, encoder_kwargs, encoder_weights)
        require_strides(features, LEVELS, "fpn", encoder)

        # === Top-down pathway ===
        pyramid = {}
        top = None
        for stride in reversed(LEVELS):
            p = keras.layers.Conv2D(pyramid_channels, 1, name=f"decoder_lateral{stride}")(
                features[stride]
            )
            if top is not None:
                top = keras.layers.UpSampling2D(2, name=f"decoder_topdown{stride}_upsample")(top)
                p = keras.layers.Add(name=f"decoder_topdown{stride}_add")([top, p])
            pyramid[stride] = top = p

        # === Semantic head: every level to stride 4 ===
        branches = []
        for stride in LEVELS:
            y = pyramid[stride]
            steps = max(1, stride.bit_length() - 3)  # log2(stride / 4), at least one conv
            for step in range(steps):
                name = f"decoder_p{stride}_stage{step + 1}"
                if decoder_norm == "batch":
                    y = conv_bn_act(y, segmentation_channels, 3, name)
                else:
                    y = _conv_gn_relu(y, segmentation_channels, name)
                if stride > 4:
                    y = upsample(y, 2, f"{name}_upsample")
            branches.append(y)
        if merge == "add":
            y = keras.layers.Add(name="decoder_merge")(branches)
        else:
            y = keras.layers.Concatenate(name="decoder_merge")(branches)
        if dropout > 0:
            y = keras.layers.SpatialDropout2D(dropout, name="decoder_dropout")(y)

        # === Head ===
        y = keras.layers.Conv2D(num_classes, 1, name="head_conv", dtype="float32")(y)
        logits = upsample(y, 4, "head_upsample")
        outputs = model_output(logits, image, activation, pad_to_divisor)
        if deep_supervision:  # finest first: P4 is aux 1
            aux = [aux_head(pyramid[s], num_classes, k) for k, s in enumerate(LEVELS, 1)]
            outputs = with_aux(outputs, aux, deep_supervision)
        super().__init__(inputs=image, outputs=outputs, **{"name": "fpn", **kwargs})

        # === Config ===
        self._init_config(locals())


def _conv_gn_relu(x, filters: int, name: str):
    """3x3 conv (no bias) -> GroupNorm (32 groups, PyTorch's epsilon) -> ReLU."""
    x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.GroupNormalization(GROUPS, epsilon=1e-5, name=f"{name}_gn")(x)
    return keras.layers.Activation("relu", name=f"{name}_relu")(x)
