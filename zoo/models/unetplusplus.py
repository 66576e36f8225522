"""UNet++: U-Net with nested, densely connected skip pathways."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from zoo.layers import conv_bn_act, upsample_conv_bn_act
from zoo.models.base import (
    SegmentationModel,
    aux_head,
    check_activation,
    check_channels,
    check_deep_supervision,
    check_num_classes,
    encoder_features,
    model_input,
    model_output,
    require_strides,
    with_aux,
)
from zoo.registry import register_model


@register_model(
    "unetplusplus",
    output_stride=32,
    tiny_config={
        "encoder": "resnet18",
        "encoder_kwargs": {"base_width": 8},
        "decoder_channels": [16, 8, 8, 8, 8],
    },
    description="UNet++: nested dense skip pathways between encoder and decoder (smp layout).",
)
@keras.saving.register_keras_serializable(package="zoo")
class UNetPlusPlus(SegmentationModel):
    """UNet++ with the layout of segmentation_models_pytorch's ``UnetPlusPlus``.

    Levels are numbered from the deepest encoder map (level 0, stride ``2**depth``) to the
    finest (stride 2); ``depth = len(decoder_channels)``. Node ``x_{d}_{l}`` (column `l`,
    row `d <= l`) upsamples its input 2x (nearest), concatenates the nodes ``x_{d+1}_{l}``
    ... ``x_{l}_{l}`` of its column and the encoder map of level ``l + 1``, and applies two
    3x3 conv-BN-ReLU. The input of ``x_{l}_{l}`` is the encoder map of level `l`, that of
    ``x_{d}_{l}`` (d < l) is ``x_{d}_{l-1}``. Row 0 has `decoder_channels[l]` channels; the
    nested nodes have the channels of their column's encoder skip. A last node
    ``x_0_{depth-1}`` upsamples to the input size without a skip, and a 3x3 conv with bias
    gives the logits. The upsampling, concatenation and first conv of every node are one
    `UpsampleConcatConv2D` (same function, fewer FLOPs). Without a stride-2 map (ConvNeXt)
    that column has no nested nodes and its row-0 node no skip, as in smp.

    With the defaults, `resnet34` and one class: 26,078,609 trainable parameters, smp 0.6's
    count (tested).

    Args:
        num_classes: output channels (1 for binary segmentation).
        input_shape: (height, width, channels); height/width may be None.
        encoder: registered encoder name with the strides ``2**depth`` ... 4 (2 optional).
        encoder_kwargs: keyword arguments of the encoder builder.
        encoder_weights: pretrained encoder weights: None (random) or a source named in
            docs/models.md; read when the model is built, never when a saved model loads.
        decoder_channels: row-0 channels, deepest first; the length is the depth (divisor
            ``2**depth``).
        deep_supervision: also output auxiliary logits (`head_aux_<k>`, a 1x1 conv) of the
            row-0 nodes ``x_0_{l}`` (the full-depth decoder path) below full resolution,
            at strides 2, 4, ... ``2**(depth-1)``: the outputs are ``[logits, aux_1 (stride
            2), ..., aux_{depth-1}]``. Off: the graph and parameters are exactly those
            without it.
        activation: None (logits), "sigmoid" or "softmax".
        pad_to_divisor: pad inputs to a multiple of the divisor and crop the logits back.

    Example:

    ```python
    model = zoo.create_model("unetplusplus", num_classes=3, input_shape=(256, 256, 3))
    ```

    Reference:
        Zhou et al., "UNet++: A Nested U-Net Architecture for Medical Image Segmentation",
        DLMIA 2018.
    """

    supports_deep_supervision = True

    @classmethod
    def aux_levels(cls, args: dict[str, Any]) -> int:
        return len(args["decoder_channels"]) - 1

    @classmethod
    def divisor_for(cls, config: dict[str, Any] | None = None) -> int:
        """``2**depth``: each decoder block doubles the resolution."""
        return 2 ** len(cls.arguments(config)["decoder_channels"])

    def __init__(
        self,
        num_classes: int = 1,
        input_shape: Sequence[int | None] = (None, None, 3),
        encoder: str = "resnet34",
        encoder_kwargs: dict[str, Any] | None = None,
        encoder_weights: str | None = None,
        decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
        deep_supervision: bool = False,
        activation: str | None = None,
        pad_to_divisor: bool = False,
        **kwargs,
    ):
        check_num_classes(num_classes)
        check_activation(activation)
        channels = check_channels("decoder_channels", decoder_channels, min_len=2)
        depth = len(channels)
        check_deep_supervision(deep_supervision)
        divisor = self.divisor_for(locals())

        # === Encoder ===
        image, x = model_input(input_shape, divisor, pad_to_divisor)
        features = encoder_features(encoder, x, encoder_kwargs, encoder_weights)
        strides = [divisor // 2**level for level in range(depth)]  # level -> stride
        require_strides(features, [s for s in strides if s > 2], "unetplusplus", encoder)
        levels = [features.get(s) for s in strides]  # levels[0]: deepest; None: no map

        # === Nested decoder ===
        def node(inputs, skips, filters, name):
            y = upsample_conv_bn_act(inputs, skips, filters, f"{name}_conv1")
            return conv_bn_act(y, filters, 3, f"{name}_conv2")

        nodes: dict[tuple[int, int], Any] = {}
        for col in range(depth - 1):
            skip = levels[col + 1]  # encoder map joining column `col`
            for row in range(col, -1, -1):
                if row > 0 and skip is None:
                    continue  # no skip at this level: only the row-0 node (smp: empty nodes)
                inputs = levels[row] if row == col else nodes[row, col - 1]
                nested = [nodes[r, col] for r in range(row + 1, col + 1) if (r, col) in nodes]
                filters = channels[col] if row == 0 else skip.shape[-1]
                extra = [skip] if skip is not None else []
                nodes[row, col] = node(inputs, nested + extra, filters, f"decoder_x_{row}_{col}")
        y = node(nodes[0, depth - 2], [], channels[-1], f"decoder_x_0_{depth - 1}")

        # === Head ===
        logits = keras.layers.Conv2D(
            num_classes, 3, padding="same", name="head_conv", dtype="float32"
        )(y)
        outputs = model_output(logits, image, activation, pad_to_divisor)
        if deep_supervision:  # finest first: x_0_{depth-2} (stride 2) is aux 1
            rows = [nodes[0, col] for col in range(depth - 2, -1, -1)]
            aux = [aux_head(y, num_classes, k) for k, y in enumerate(rows, 1)]
            outputs = with_aux(outputs, aux, deep_supervision)
        super().__init__(inputs=image, outputs=outputs, **{"name": "unetplusplus", **kwargs})

        # === Config ===
        self._init_config(locals())
