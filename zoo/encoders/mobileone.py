"""Native MobileOne encoders in their training-time form, as smp's ``mobileone_s0`` ... ``_s4``.

smp's ``MobileOne`` (Apple's ml-mobileone, built with ``inference_mode=False``, the form its
published files hold): a stem block (3x3/2) and four stages of units, each a depthwise 3x3
block (stride 2 in a stage's first unit) then a pointwise 1x1 block. A block sums its
branches: a 1x1 conv-BN "scale" branch (3x3 blocks only), ``num_conv_branches`` kxk conv-BN
branches (the stem has one) and a BN-only identity branch (when the input's shape is the
output's), then squeeze-and-excitation (s4's last five stage-3 units and its stage 4) and a
ReLU. The feature maps are smp's: the stem's and each stage's output (strides 2 ... 32).
Convolutions pad as PyTorch does, so smp's weights compute what they did; output strides 16
and 8 dilate stage 4 (and 3) as smp's ``make_dilated``, which keeps a block's branches as
they were built (a formerly strided block still has no identity branch). `reparameterize`
fuses each block's branches into the one convolution the inference form holds.

Checkpoint keys: ``stage0.rbr_conv.0.conv``, ``stage{s}.{i}.rbr_scale.bn``,
``stage{s}.{i}.rbr_skip``, ``stage{s}.{i}.se.reduce`` ... (the ``mobileone`` port table; our
block ``stage{s}_block{i}`` is smp's ``stage{s}.{i}``, both from 0).

Reference:
    Vasu et al., "MobileOne: An Improved One millisecond Mobile Backbone", CVPR 2023.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
import numpy as np

from zoo import pretrained
from zoo.checks import check_positive, check_positive_int
from zoo.encoders._common import check_output_stride, native_encoder
from zoo.layers import batch_norm, squeeze_excite, subsample_for_pointwise
from zoo.registry import register_encoder

BLOCKS = (2, 8, 10, 1)  # units per stage, every variant
# name -> (width multipliers, conv branches, SE, smp-hub revision of "imagenet").
VARIANTS: dict[str, tuple[tuple[float, ...], int, bool, str]] = {
    "mobileone_s0": ((0.75, 1.0, 1.0, 2.0), 4, False, "f52815cf0ad29278a9860c9cd5fabf19f904bedf"),
    "mobileone_s1": ((1.5, 1.5, 2.0, 2.5), 1, False, "5707a98852b762cd8e0c43b5c8c729cd28496677"),
    "mobileone_s2": ((1.5, 2.0, 2.5, 4.0), 1, False, "ddc3db8fa40d271902c7a8c95cee6691f617d551"),
    "mobileone_s3": ((2.0, 2.5, 3.0, 4.0), 1, False, "da89b84a91b7400c366c358bfbf8dd0b2fa4dde2"),
    "mobileone_s4": ((3.0, 3.5, 3.5, 4.0), 1, True, "16197c55d599076b6aae67a83d3b3f70c31b097c"),
}
# Two stage-3 units, so that s4's squeeze-and-excitation (its last half) is there too.
TINY = {"width_multipliers": (0.25, 0.25, 0.25, 0.25), "num_blocks_per_stage": (1, 1, 2, 1)}


def _conv_bn(x, filters, kernel, stride, dilation, depthwise, name):
    if kernel == 1 and not depthwise:  # the stem's scale branch: 1x1/2 on the image
        x, stride = subsample_for_pointwise(x, stride, name)
    kwargs = {"strides": stride, "dilation_rate": dilation, "use_bias": False}
    kwargs["name"] = f"{name}_conv"
    if depthwise:
        x = keras.layers.DepthwiseConv2D(kernel, **kwargs)(x)
    else:
        x = keras.layers.Conv2D(filters, kernel, **kwargs)(x)
    return batch_norm(f"{name}_bn")(x)


def mobileone_block(
    x,
    filters: int,
    kernel: int,
    stride: int,
    branches: int,
    name: str,
    depthwise: bool = False,
    use_se: bool = False,
    dilation: int = 1,
):
    """smp's training-time ``MobileOneBlock``: ReLU(SE(scale + identity + sum of convs)).

    Args:
        x: input tensor.
        filters: output channels (a depthwise block's are its input's).
        kernel: 3 or 1 (a 1x1 block has no scale branch).
        stride: the stride the block was built with (the identity branch exists only for 1).
        branches: kxk conv-BN branches.
        name: prefix of the block's layers.
        depthwise: groups = channels (``DepthwiseConv2D``).
        use_se: squeeze-and-excitation (reduction 16) before the ReLU.
        dilation: smp's ``make_dilated`` rate; above 1 the block runs at stride 1.
    """
    channels = int(x.shape[-1])
    built_stride, stride = stride, (1 if dilation > 1 else stride)
    pad = kernel // 2 * dilation
    # PyTorch pads `pad` each side (TF's "same" would pad 0 / 1 at stride 2).
    padded = keras.layers.ZeroPadding2D(pad, name=f"{name}_pad")(x) if pad else x
    out = []  # smp's order: scale, identity, then the conv branches
    if kernel > 1:
        out.append(_conv_bn(x, filters, 1, stride, 1, depthwise, f"{name}_scale"))
    if filters == channels and built_stride == 1:
        out.append(batch_norm(f"{name}_skip")(x))
    for j in range(branches):
        y = padded
        conv = f"{name}_conv{j}"
        kwargs = {"strides": stride, "dilation_rate": dilation}
        kwargs.update(use_bias=False, name=f"{conv}_conv")
        if depthwise:
            y = keras.layers.DepthwiseConv2D(kernel, **kwargs)(y)
        else:
            y = keras.layers.Conv2D(filters, kernel, **kwargs)(y)
        out.append(batch_norm(f"{conv}_bn")(y))
    x = keras.layers.Add(name=f"{name}_add")(out) if len(out) > 1 else out[0]
    if use_se:
        x = squeeze_excite(x, int(filters * 0.0625), f"{name}_se")
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def mobileone_features(
    x,
    width_multipliers: Sequence[float],
    num_conv_branches: int,
    use_se: bool,
    num_blocks_per_stage: Sequence[int] = BLOCKS,
    output_stride: int = 32,
    name: str = "encoder",
) -> dict:
    """MobileOne feature maps keyed by stride (a dilated stage keeps its input's)."""
    check_output_stride(output_stride)
    rates = {32: (1, 1), 16: (1, 2), 8: (2, 4)}[output_stride]  # stages 3 and 4
    planes = min(64, int(64 * width_multipliers[0]))
    x = mobileone_block(x, planes, 3, 2, 1, f"{name}_stem")
    features, stride = {2: x}, 2
    for s, (base, blocks) in enumerate(zip((64, 128, 256, 512), num_blocks_per_stage), 1):
        out = int(base * width_multipliers[s - 1])
        se_units = (blocks // 2 if s == 3 else blocks if s == 4 else 0) if use_se else 0
        dilation = rates[s - 3] if s >= 3 else 1
        for u in range(blocks):
            se = u >= blocks - se_units
            unit = f"{name}_stage{s}_block"
            x = mobileone_block(
                x, planes, 3, 2 if u == 0 else 1, num_conv_branches, f"{unit}{2 * u}",
                depthwise=True, use_se=se, dilation=dilation,
            )  # fmt: skip
            x = mobileone_block(x, out, 1, 1, num_conv_branches, f"{unit}{2 * u + 1}", use_se=se)
            planes = out
        stride *= 2 if dilation == 1 else 1
        features[stride] = x
    return features


def reparameterize(encoder: keras.Model) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each block's branches fused into one convolution, as smp's ``reparameterize``.

    Args:
        encoder: a standalone MobileOne encoder (`zoo.create_encoder`) or a model holding one.

    Returns:
        ``{block name: (kernel, bias)}`` (float64): the kxk kernel in Keras' layout (``(k, k,
        in, out)``; ``(k, k, channels, 1)`` for a depthwise block) and the bias of the
        inference-time convolution computing the block's sum of branches (before its SE and
        ReLU; same stride, padding and dilation as its conv branches).
    """
    layers = {layer.name: layer for layer in _all_layers(encoder)}
    fused = {}
    for relu in [n for n in layers if n.endswith("_relu")]:
        block = relu[: -len("_relu")]
        first = layers[f"{block}_conv0_conv"]
        depthwise = isinstance(first, keras.layers.DepthwiseConv2D)
        size = int(first.kernel.shape[0])
        kernel = np.zeros(tuple(first.kernel.shape), np.float64)
        bias = np.zeros(int(layers[f"{block}_conv0_bn"].gamma.shape[0]), np.float64)
        branches = [f"{block}_scale"]
        branches += [
            f"{block}_conv{j}" for j in range(len(layers)) if f"{block}_conv{j}_conv" in layers
        ]
        for branch in [b for b in branches if f"{b}_conv" in layers]:
            k = np.asarray(layers[f"{branch}_conv"].kernel, np.float64)
            pad = (size - k.shape[0]) // 2  # the 1x1 scale branch at the kernel's centre
            k = np.pad(k, ((pad, pad), (pad, pad), (0, 0), (0, 0)))
            k, b = _fold(k, layers[f"{branch}_bn"], depthwise)
            kernel, bias = kernel + k, bias + b
        if f"{block}_skip" in layers:
            identity = np.zeros_like(kernel)
            c = np.arange(kernel.shape[2])
            identity[size // 2, size // 2, c, 0 if depthwise else c] = 1.0
            k, b = _fold(identity, layers[f"{block}_skip"], depthwise)
            kernel, bias = kernel + k, bias + b
        fused[block] = (kernel, bias)
    return fused


def _fold(kernel: np.ndarray, bn, depthwise: bool) -> tuple[np.ndarray, np.ndarray]:
    """`kernel` with the inference-time batch norm after it folded in."""
    gamma, beta = np.asarray(bn.gamma, np.float64), np.asarray(bn.beta, np.float64)
    mean, var = np.asarray(bn.moving_mean, np.float64), np.asarray(bn.moving_variance, np.float64)
    scale = gamma / np.sqrt(var + bn.epsilon)
    # A depthwise kernel's output channels are its input axis (multiplier 1).
    return kernel * (scale[:, None] if depthwise else scale), beta - mean * scale


def _all_layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)
        else:
            yield layer


_DOC = """MobileOne-{variant} encoder (training-time branches): ``{{stride: features}}`` for a
    tensor, or a `keras.Model`.

    Args:
        inputs: image tensor in [0, 1], or None to get a standalone model.
        input_shape: shape of the standalone model's input (any number of channels).
        width_multipliers: the four stages' width multipliers ({widths} = the original).
        num_conv_branches: kxk conv branches per stage block ({branches} = the original).
        use_se: squeeze-and-excitation in the last half of stage 3 and in stage 4 ({se} =
            the original).
        num_blocks_per_stage: units per stage ((2, 8, 10, 1) = the original).
        output_stride: 32, 16 or 8; below 32 stage 4 (and 3) use dilation (as smp's).
        weights: None (random), "imagenet" (Apple's ImageNet-1k weights, unfused, as
            segmentation_models_pytorch publishes them, from the Hugging Face hub) or the
            path of an smp state dict (.safetensors, .pth). Pretrained weights bring their
            ImageNet normalization into the graph (inputs stay in [0, 1]).
        input_normalization: "weights", "imagenet" or None (the caller normalizes, as with smp).
        input_range: None, or ``[low, high]``: intensities mapped linearly so that low -> 0
            and high -> 1, inside the model, before the weights' normalization.
        name: prefix of every layer name.
    """


def _builder(encoder: str) -> Callable:
    widths, branches, se, _ = VARIANTS[encoder]

    def build(
        inputs=None,
        *,
        input_shape: Sequence[int | None] = (None, None, 3),
        width_multipliers: Sequence[float] = widths,
        num_conv_branches: int = branches,
        use_se: bool = se,
        num_blocks_per_stage: Sequence[int] = BLOCKS,
        output_stride: int = 32,
        weights: str | None = None,
        input_normalization: str | None = "weights",
        input_range: Sequence[float] | None = None,
        name: str = "encoder",
    ):
        if len(width_multipliers) != 4 or len(num_blocks_per_stage) != 4:
            raise ValueError(
                "Invalid value for argument `width_multipliers` / `num_blocks_per_stage`: "
                f"expected 4 values each. Received: width_multipliers={width_multipliers!r}, "
                f"num_blocks_per_stage={num_blocks_per_stage!r}"
            )
        for w in width_multipliers:
            check_positive("width_multipliers", w)
        for n in num_blocks_per_stage:
            check_positive_int("num_blocks_per_stage", n)
        check_positive_int("num_conv_branches", num_conv_branches)
        check_output_stride(output_stride)
        return native_encoder(
            encoder, inputs, input_shape, weights, input_normalization, input_range, name,
            lambda x: mobileone_features(
                x, [float(w) for w in width_multipliers], int(num_conv_branches), bool(use_se),
                [int(n) for n in num_blocks_per_stage], output_stride, name,
            ),
        )  # fmt: skip

    build.__name__ = build.__qualname__ = encoder
    build.__doc__ = _DOC.format(
        variant=encoder[-2:].upper(), widths=widths, branches=branches, se=se
    )
    return build


def out_channels(encoder: str) -> list[int]:
    """smp's ``out_channels`` of `encoder` at strides 2 ... 32."""
    widths = VARIANTS[encoder][0]
    return [min(64, int(64 * widths[0]))] + [
        int(b * w) for b, w in zip((64, 128, 256, 512), widths)
    ]


for _name, (_widths, _branches, _se, _revision) in VARIANTS.items():
    register_encoder(
        _name,
        strides=(2, 4, 8, 16, 32),
        tiny_config=TINY,
        output_strides=(8, 16, 32),
        pretrained=True,
        description=(
            f"MobileOne-{_name[-2:].upper()} (training-time branches, as smp's {_name}, "
            f"channels {out_channels(_name)}); smp's weights imagenet."
        ),
    )(_builder(_name))
    pretrained.register_encoder_weights(
        _name,
        table="mobileone",
        first_conv="stage0.rbr_conv.0.conv",
        normalization=pretrained.IMAGENET,
        sources={
            "imagenet": pretrained.smp_hub_source(
                _name,
                "imagenet",
                _revision,
                description=(
                    f"Apple's ImageNet-1k {_name} weights (unfused), as "
                    f"segmentation_models_pytorch publishes them (smp-hub/{_name}.imagenet)"
                ),
                license="Apple's ml-mobileone license (see its LICENSE)",
            )
        },
    )
