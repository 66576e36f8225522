"""FPN: the Panoptic-FPN semantic segmentation head on a registered encoder."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

import zoo
from zoo.layers import BilinearUpsample2D, conv_bn_act
from zoo.models.base import (
    SegmentationModel,
    check_activation,
    check_num_classes,
    check_positive_int,
    encoder_features,
    model_input,
    model_output,
    require_strides,
)

MERGES = ("add", "concat")
LEVELS = (4, 8, 16, 32)


@zoo.register_model(
    "fpn",
    divisor=32,
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
    and upsampled 4x (bilinear). The paper uses GroupNorm; we use the zoo's synchronized
    BatchNorm, which gives the same cross-replica behaviour for less compute.

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
        activation: None (logits), "sigmoid" or "softmax".
        pad_to_divisor: pad inputs to a multiple of 32 and crop the logits back.

    Example:

    ```python
    model = zoo.create_model("fpn", num_classes=5, input_shape=(256, 256, 3))
    ```

    Reference:
        Kirillov et al., "Panoptic Feature Pyramid Networks", CVPR 2019.
    """

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
        if (
            isinstance(dropout, bool)
            or not isinstance(dropout, (int, float))
            or not (0 <= dropout < 1)
        ):
            raise ValueError(
                "Invalid value for argument `dropout`: expected a rate in [0, 1). "
                f"Received: dropout={dropout!r}"
            )
        divisor = 32

        # === Encoder ===
        image, x = model_input(input_shape, divisor, pad_to_divisor)
        features = encoder_features(encoder, x, encoder_kwargs)
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
                y = conv_bn_act(y, segmentation_channels, 3, name)
                if stride > 4:
                    # float32: TF 2.21's XLA rejects a bfloat16 bilinear resize in training.
                    y = BilinearUpsample2D(2, name=f"{name}_upsample", dtype="float32")(y)
            branches.append(y)
        if merge == "add":
            y = keras.layers.Add(name="decoder_merge")(branches)
        else:
            y = keras.layers.Concatenate(name="decoder_merge")(branches)
        if dropout > 0:
            y = keras.layers.SpatialDropout2D(dropout, name="decoder_dropout")(y)

        # === Head ===
        y = keras.layers.Conv2D(num_classes, 1, name="head_conv", dtype="float32")(y)
        logits = BilinearUpsample2D(4, name="head_upsample", dtype="float32")(y)
        outputs = model_output(logits, image, activation, pad_to_divisor)
        super().__init__(inputs=image, outputs=outputs, **{"name": "fpn", **kwargs})

        # === Config ===
        self._init_config(locals(), divisor)
