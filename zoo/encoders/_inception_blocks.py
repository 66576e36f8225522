"""What the Inception-v4 and Inception-ResNet-v2 encoders share (Cadene's pretrainedmodels
layout, with smp's padding).

smp pads every 3x3 conv and every max-pool of these networks by one pixel (pretrainedmodels
pads none of the "valid" ones), so every stride-2 step halves an even size exactly. Every
convolution then pads ``k // 2`` on each side (the 1x7, 7x1, 1x3, 3x1 and 5x5 ones already
did): TensorFlow's "same" at stride 1, explicit zeros before a strided one. Max-pools pad
with -inf (`PaddedMaxPooling2D`), the 3x3 average pools do not count the padding (as
``count_include_pad=False``).

Layer names spell the PyTorch module path with ``__`` for ``.`` (``features.4.branch1.3``'s
conv is ``{name}_features__4__branch1__3__conv``), so one port rule maps them all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras

from zoo import pretrained
from zoo.checks import check_positive
from zoo.encoders._common import (
    native_encoder,
)
from zoo.layers import PaddedMaxPooling2D, batch_norm


def layer_name(name: str, path: str) -> str:
    """Our layer name for PyTorch module `path` (``.`` -> ``__``)."""
    return f"{name}_{path.replace('.', '__')}"


class InceptionGraph:
    """Adds pretrainedmodels' modules to a graph: `width` scales every BasicConv2d."""

    def __init__(self, name: str, width_scale: float = 1.0):
        self.name, self.width_scale = name, width_scale

    def width(self, channels: int) -> int:
        return max(1, int(round(channels * self.width_scale)))

    def conv(self, x, filters: int, kernel: int | Sequence[int], path: str, stride: int = 1):
        """pretrainedmodels' BasicConv2d (conv without bias, BN eps 1e-3, ReLU) at `path`."""
        k = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
        base = layer_name(self.name, path)
        padding = "same"
        if stride > 1:
            x = keras.layers.ZeroPadding2D((k[0] // 2, k[1] // 2), name=f"{base}__pad")(x)
            padding = "valid"
        x = keras.layers.Conv2D(
            self.width(filters), k, strides=stride, padding=padding, use_bias=False,
            name=f"{base}__conv",
        )(x)  # fmt: skip
        x = batch_norm(f"{base}__bn", epsilon=1e-3)(x)
        return keras.layers.ReLU(name=f"{base}__relu")(x)

    def chain(self, x, path: str, *convs):
        """An ``nn.Sequential`` of BasicConv2d: (filters, kernel[, stride]) each."""
        for i, spec in enumerate(convs):
            x = self.conv(x, spec[0], spec[1], f"{path}.{i}", *spec[2:])
        return x

    def max_pool(self, x, path: str):
        return PaddedMaxPooling2D(3, 2, 1, name=layer_name(self.name, path))(x)

    def avg_pool_conv(self, x, filters: int, path: str):
        """``Sequential(AvgPool2d(3, 1, 1, count_include_pad=False), BasicConv2d 1x1)``."""
        y = keras.layers.AveragePooling2D(
            3, strides=1, padding="same", name=layer_name(self.name, f"{path}.0")
        )(x)
        return self.conv(y, filters, 1, f"{path}.1")

    def concat(self, tensors: list, path: str):
        return keras.layers.Concatenate(name=layer_name(self.name, f"{path}.cat"))(tensors)


def build_encoder(
    encoder: str,
    features_fn: Callable,
    inputs,
    input_shape: Sequence[int | None],
    width_scale: float,
    weights,
    input_normalization,
    input_range,
    name: str,
):
    """The registered builders' shared body: checks, normalization, graph, weights."""
    check_positive("width_scale", width_scale)
    return native_encoder(
        encoder, inputs, input_shape, weights, input_normalization, input_range, name,
        lambda x: features_fn(x, InceptionGraph(name, float(width_scale))),
    )  # fmt: skip


def register_weights(encoder: str, first_conv: str, revisions: dict[str, str], what: str):
    """smp's ``imagenet`` and ``imagenet+background`` (1001 classes) files of `encoder`."""
    pretrained.register_encoder_weights(
        encoder,
        table="inception",
        first_conv=first_conv,
        normalization=pretrained.INCEPTION,
        sources={
            weights: pretrained.smp_hub_source(
                encoder,
                weights,
                revision,
                description=(
                    f"{what} ImageNet weights{' (1001 classes)' if '+' in weights else ''} as "
                    "converted by Cadene's pretrainedmodels, as segmentation_models_pytorch "
                    f"publishes them (smp-hub/{encoder}.{weights.replace('+', '-')})"
                ),
                license="Apache-2.0 (TensorFlow models) / BSD-3-Clause (pretrainedmodels)",
            )
            for weights, revision in revisions.items()
        },
    )


_DOC = """{title} encoder. Returns ``{{stride: features}}`` for a tensor, or a `keras.Model`.

    Args:
        inputs: image tensor in [0, 1], or None to get a standalone model.
        input_shape: shape of the standalone model's input (any number of channels).
        width_scale: every BasicConv2d's channels times this (rounded; 1 = the original),
            to shrink the network for tests.
        weights: None (random), "imagenet" or "imagenet+background" (TensorFlow's ImageNet
            weights as pretrainedmodels converted them and segmentation_models_pytorch
            publishes them, from the Hugging Face hub; the second had 1001 classes), or the
            path of a pretrainedmodels / smp state dict (.safetensors, .pth). Pretrained
            weights bring their normalization ([0, 1] -> [-1, 1]) into the graph.
        input_normalization: "weights", "imagenet" (ImageNet's statistics whatever the
            weights) or None (the caller normalizes, as with smp).
        input_range: None, or ``[low, high]``: intensities mapped linearly so that low -> 0
            and high -> 1, inside the model, before the weights' normalization.
        name: prefix of every layer name.
    """


def builder(encoder: str, title: str, features_fn: Callable) -> Callable:
    def build(
        inputs=None,
        *,
        input_shape: Sequence[int | None] = (None, None, 3),
        width_scale: float = 1.0,
        weights: str | None = None,
        input_normalization: str | None = "weights",
        input_range: Sequence[float] | None = None,
        name: str = "encoder",
    ):
        return build_encoder(
            encoder, features_fn, inputs, input_shape, width_scale, weights,
            input_normalization, input_range, name,
        )  # fmt: skip

    build.__name__ = build.__qualname__ = encoder
    build.__doc__ = _DOC.format(title=title)
    return build
