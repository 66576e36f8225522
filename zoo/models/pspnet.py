"""PSPNet: pyramid pooling on one encoder map, then a 1x1 fusion and a bilinear head."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from zoo.checks import check_choice
from zoo.layers import BilinearUpsampling, conv_bn_act, pyramid_pooling
from zoo.models._common import dilated_encoder_features, stage_output
from zoo.models.base import (
    SegmentationModel,
    aux_head,
    check_activation,
    check_deep_supervision,
    check_num_classes,
    check_positive_int,
    check_rate,
    model_input,
    model_output,
    require_strides,
    with_aux,
)
from zoo.registry import register_model

DEPTHS = (3, 4, 5)
STRIDES = (8, 16, 32)
POOL_SIZES = (1, 2, 3, 6)


@register_model(
    "pspnet",
    global_context=True,  # pyramid pooling: every pixel sees the whole image
    output_stride=8,
    tiny_config={
        "encoder": "resnet18",
        "encoder_kwargs": {"base_width": 8},
        "psp_out_channels": 16,
    },
    description="PSPNet: pyramid pooling (1, 2, 3, 6 bins) on the stride-8 map (smp layout).",
)
@keras.saving.register_keras_serializable(package="zoo")
class PSPNet(SegmentationModel):
    """PSPNet with the layout of segmentation_models_pytorch's ``PSPNet``.

    The encoder map of stage `encoder_depth` (stride ``2**encoder_depth``; smp's default 3
    uses the stride-8 map, so a ResNet's last two stages are not part of the model) goes
    through the pyramid pooling module: adaptive average pooling to 1x1, 2x2, 3x3 and 6x6
    (PyTorch's bins), each 1x1 conv to a quarter of the channels (-BN, except the 1x1 grid,
    which has a bias and no BN as in smp) -ReLU, bilinearly resized back (align_corners=True)
    and concatenated before the map itself. A 1x1 conv-BN-ReLU to `psp_out_channels`, 2D
    dropout, a 3x3 conv with bias and a bilinear upsampling (align_corners=True) to the input
    size give the logits.

    With the defaults, `resnet34` and one class: 1,501,217 trainable parameters, the weights
    smp 0.6's ``PSPNet`` uses (it also builds, but never runs, the encoder's last stages;
    tested).

    The paper's network instead pools the last stage of a dilated ResNet at stride 8:
    ``encoder_depth=5, output_stride=8`` (or 16) builds that; ``deep_supervision=True`` adds
    the paper's auxiliary loss branch on the stage before the pooled one.

    Args:
        num_classes: output channels (1 for binary segmentation).
        input_shape: (height, width, channels); height/width may be None.
        encoder: registered encoder name; with `output_stride` one that supports dilation.
        encoder_kwargs: keyword arguments of the encoder builder.
        encoder_weights: pretrained encoder weights: None (random) or a source named in
            docs/models.md; read when the model is built, never when a saved model loads.
        encoder_depth: 3, 4 or 5: the encoder stage whose map is pooled (stride
            ``2**encoder_depth`` unless dilated).
        output_stride: stride of the pooled map (the divisor): None for
            ``2**encoder_depth``; a smaller value (8 or 16) dilates the encoder's later
            stages instead of striding them.
        psp_out_channels: channels of the fusion conv after the pyramid.
        dropout: 2D (channel) dropout rate before the head, in [0, 1).
        deep_supervision: also output auxiliary logits (`head_aux_1`, a 3x3 conv) of the
            encoder stage before the pooled one (stride ``2**(encoder_depth-1)``, or the
            output stride when dilated), as the paper's auxiliary loss does: the outputs are
            ``[logits, aux_1]``. Off: the graph and parameters are exactly those without it.
        activation: None (logits), "sigmoid" or "softmax".
        pad_to_divisor: pad inputs to a multiple of the divisor and crop the logits back.

    Example:

    ```python
    model = zoo.create_model("pspnet", num_classes=21, input_shape=(None, None, 3))
    paper = zoo.create_model("pspnet", num_classes=21, encoder_depth=5, output_stride=8)
    ```

    Reference:
        Zhao et al., "Pyramid Scene Parsing Network", CVPR 2017.
    """

    supports_deep_supervision = True

    @classmethod
    def aux_levels(cls, args: dict[str, Any]) -> int:
        return 1

    @classmethod
    def divisor_for(cls, config: dict[str, Any] | None = None) -> int:
        """The pooled map's stride: `output_stride`, or ``2**encoder_depth`` without it."""
        args = cls.arguments(config)
        dense = 2 ** int(args["encoder_depth"])
        return min(args["output_stride"] or dense, dense)

    def __init__(
        self,
        num_classes: int = 1,
        input_shape: Sequence[int | None] = (None, None, 3),
        encoder: str = "resnet34",
        encoder_kwargs: dict[str, Any] | None = None,
        encoder_weights: str | None = None,
        encoder_depth: int = 3,
        output_stride: int | None = None,
        psp_out_channels: int = 512,
        dropout: float = 0.2,
        deep_supervision: bool = False,
        activation: str | None = None,
        pad_to_divisor: bool = False,
        **kwargs,
    ):
        check_num_classes(num_classes)
        check_activation(activation)
        check_choice("encoder_depth", encoder_depth, DEPTHS)
        dense = 2**encoder_depth
        if output_stride is not None and output_stride not in [s for s in STRIDES if s <= dense]:
            raise ValueError(
                "Invalid value for argument `output_stride`: expected None or one of "
                f"{STRIDES} not above 2**encoder_depth={dense}. Received: "
                f"output_stride={output_stride!r}"
            )
        check_positive_int("psp_out_channels", psp_out_channels)
        check_rate("dropout", dropout)
        stride = min(output_stride or dense, dense)
        dilate_to = stride if stride < dense else 32
        check_deep_supervision(deep_supervision)
        divisor = self.divisor_for(locals())

        # === Encoder ===
        image, x = model_input(input_shape, divisor, pad_to_divisor)
        features = dilated_encoder_features(
            encoder, x, encoder_kwargs, encoder_weights, dilate_to, "pspnet"
        )
        require_strides(features, (stride,), "pspnet", encoder)
        y = stage_output(features, encoder, encoder_kwargs, dense, dilate_to)

        # === Pyramid pooling ===
        branches = pyramid_pooling(
            y,
            POOL_SIZES,
            max(1, y.shape[-1] // len(POOL_SIZES)),
            "decoder_psp",
            align_corners=True,
            global_norm=False,
        )
        y = keras.layers.Concatenate(name="decoder_psp_concat")([*branches, y])
        y = conv_bn_act(y, psp_out_channels, 1, "decoder_conv")
        if dropout > 0:
            y = keras.layers.SpatialDropout2D(dropout, name="decoder_dropout")(y)

        # === Head ===
        y = keras.layers.Conv2D(num_classes, 3, padding="same", name="head_conv", dtype="float32")(
            y
        )
        logits = BilinearUpsampling(stride, align_corners=True, name="head_upsample")(y)
        outputs = model_output(logits, image, activation, pad_to_divisor)
        if deep_supervision:  # the paper's auxiliary branch: the stage before the pooled one
            before = stage_output(features, encoder, encoder_kwargs, dense // 2, dilate_to)
            outputs = with_aux(outputs, [aux_head(before, num_classes, 1, 3)], deep_supervision)
        super().__init__(inputs=image, outputs=outputs, **{"name": "pspnet", **kwargs})

        # === Config ===
        self._init_config(locals())
