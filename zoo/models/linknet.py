"""LinkNet: a light decoder that adds encoder skips to transposed-convolution upsamplings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from zoo.checks import check_choice
from zoo.layers import batch_norm, conv_bn_act
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
from zoo.registry import register_model

DEPTHS = (3, 4, 5)


@register_model(
    "linknet",
    output_stride=32,
    tiny_config={"encoder": "resnet18", "encoder_kwargs": {"base_width": 8}},
    description="LinkNet: 1x1 reduce, 4x4 transposed-conv 2x upsampling, 1x1 expand, add skip.",
)
@keras.saving.register_keras_serializable(package="zoo")
class LinkNet(SegmentationModel):
    """LinkNet with the layout of segmentation_models_pytorch's ``Linknet``.

    Starting from the stride ``2**encoder_depth`` map, each of `encoder_depth` decoder blocks
    reduces the channels to a quarter (1x1 conv-BN-ReLU), upsamples 2x with a 4x4 stride-2
    transposed conv (with bias, as in smp) -BN-ReLU, projects (1x1 conv-BN-ReLU) to the
    channels of the encoder map of the new stride and adds it. The last block reaches the
    input size without a skip and has `prefinal_channels`; a 1x1 conv with bias gives the
    logits. Like smp, the decoder uses four skips (the paper three) and a 1x1 head (the
    paper a transposed conv and two convs). Without a stride-2 map (ConvNeXt) that block
    keeps its input channels and adds nothing, as smp does.

    With the defaults, `resnet34` and one class: 21,771,937 trainable parameters, smp 0.6's
    count (tested).

    Args:
        num_classes: output channels (1 for binary segmentation).
        input_shape: (height, width, channels); height/width may be None.
        encoder: registered encoder name with the strides ``2**encoder_depth`` ... 4.
        encoder_kwargs: keyword arguments of the encoder builder.
        encoder_weights: pretrained encoder weights: None (random) or a source named in
            docs/models.md; read when the model is built, never when a saved model loads.
        encoder_depth: 3, 4 or 5: the decoder starts at stride ``2**encoder_depth`` (the
            divisor).
        prefinal_channels: channels of the last block (before the head).
        activation: None (logits), "sigmoid" or "softmax".
        pad_to_divisor: pad inputs to a multiple of the divisor and crop the logits back.

    Example:

    ```python
    model = zoo.create_model("linknet", num_classes=1, input_shape=(None, None, 3))
    ```

    Reference:
        Chaurasia and Culurciello, "LinkNet: Exploiting Encoder Representations for
        Efficient Semantic Segmentation", VCIP 2017.
    """

    @classmethod
    def divisor_for(cls, config: dict[str, Any] | None = None) -> int:
        """``2**encoder_depth``: the decoder starts at that stride."""
        return 2 ** int(cls.arguments(config)["encoder_depth"])

    def __init__(
        self,
        num_classes: int = 1,
        input_shape: Sequence[int | None] = (None, None, 3),
        encoder: str = "resnet34",
        encoder_kwargs: dict[str, Any] | None = None,
        encoder_weights: str | None = None,
        encoder_depth: int = 5,
        prefinal_channels: int = 32,
        activation: str | None = None,
        pad_to_divisor: bool = False,
        **kwargs,
    ):
        check_num_classes(num_classes)
        check_activation(activation)
        check_choice("encoder_depth", encoder_depth, DEPTHS)
        check_positive_int("prefinal_channels", prefinal_channels)
        divisor = self.divisor_for(locals())

        # === Encoder ===
        image, x = model_input(input_shape, divisor, pad_to_divisor)
        features = encoder_features(encoder, x, encoder_kwargs, encoder_weights)
        strides = [divisor // 2**i for i in range(encoder_depth - 1)]  # divisor ... 4
        require_strides(features, strides, "linknet", encoder)

        # === Decoder ===
        y = features[divisor]
        for i in range(encoder_depth):
            name = f"decoder_blocks_{i}"
            stride = divisor // 2 ** (i + 1)
            skip = features.get(stride) if stride > 1 else None
            if skip is not None:
                filters = skip.shape[-1]
            else:  # the last block, or a level without a map: keep the channels (smp)
                filters = prefinal_channels if stride == 1 else y.shape[-1]
            reduced = max(1, y.shape[-1] // 4)
            y = conv_bn_act(y, reduced, 1, f"{name}_0")
            y = keras.layers.Conv2DTranspose(
                reduced, 4, strides=2, padding="same", name=f"{name}_1_conv"
            )(y)
            y = batch_norm(f"{name}_1_bn")(y)
            y = keras.layers.Activation("relu", name=f"{name}_1_relu")(y)
            y = conv_bn_act(y, filters, 1, f"{name}_2")
            if skip is not None:
                y = keras.layers.Add(name=f"{name}_add")([y, skip])

        # === Head ===
        logits = keras.layers.Conv2D(num_classes, 1, name="head_conv", dtype="float32")(y)
        outputs = model_output(logits, image, activation, pad_to_divisor)
        super().__init__(inputs=image, outputs=outputs, **{"name": "linknet", **kwargs})

        # === Config ===
        self._init_config(locals())
