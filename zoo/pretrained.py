"""Pretrained encoder weights: named sources, the cache folder, downloads, first-conv adaptation.

`encoder_weights` (a model argument; an encoder builder's `weights`) is one of:

* ``None``: random initialization;
* ``"imagenet"``: the encoder's standard ImageNet weights, a `WeightsSource` registered for it
  (``zoo.pretrained.sources("resnet34")``), fetched on first use into the cache folder;
* a path to a local weights file (a state dict for native encoders, a Keras weights file for
  the ``keras_*`` adapters) or, for ``keras_hub``, a preset name or directory.

Cache folder: ``$SEGZOO_HOME/weights`` if ``SEGZOO_HOME`` is set, else
``$KERAS_HOME/segzoo/weights`` (``KERAS_HOME`` defaults to ``~/.keras``). A file is
downloaded once, to a temporary name first, then moved in place (concurrent workers are
safe). Without network (or with ``SEGZOO_OFFLINE=1``) the request fails within seconds with
one line naming the file, its URL and the exact path to put it in. Files are checked by
tensor names and shapes when they are assigned, and by SHA-256 where the source publishes
one (a `WeightsSource.sha256`, or the hash the Hugging Face hub sends with a download).

A saved model never reads any of this again: `zoo.build_context.restoring_from_file()` makes the
builders skip loading (and skip checking that a local file still exists).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoo.download import (  # noqa: F401  (part of this API)
    WeightsSource,
    cache_dir,
    cached_path,
    fetch,
    timm_hub_source,
)


@dataclass(frozen=True)
class Normalization:
    """Per-channel ``(x - mean) / std`` of images in [0, 1]: what the weights were trained on."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def per_channel(self, channels: int) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std for `channels` input channels (cycling through the RGB values, the
        same way `adapt_input_kernel` cycles through the RGB kernels)."""
        index = np.arange(channels) % len(self.mean)
        return np.asarray(self.mean)[index], np.asarray(self.std)[index]

    def scale_offset(self, channels: int) -> tuple[list[float], list[float]]:
        """``x * scale + offset`` form (`zoo.layers.ChannelAffine`)."""
        mean, std = self.per_channel(channels)
        return [float(v) for v in 1.0 / std], [float(v) for v in -mean / std]


IMAGENET = Normalization(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
# [0, 1] -> [-1, 1]: Inception's, also Xception's, AdvProp's and many ViTs'.
INCEPTION = Normalization(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


@dataclass(frozen=True)
class Layout:
    """One key layout of an encoder's checkpoints (e.g. segmentation_models_pytorch's and
    Hugging Face transformers' names for the same Mix Transformer).

    Args:
        table: the `zoo.port` table from their keys (relative to the encoder's module) to our
            layers (relative to the encoder's name prefix).
        first_conv: their module of the first convolution, relative to the encoder's module
            (adapted for other than 3 input channels); ``{prefix}{first_conv}.weight`` is how a
            file is recognized as this layout.
        prefixes: where the encoder's module sits in the files: ``""`` (an encoder's own
            file), ``"encoder."`` (a segmentation_models_pytorch model), ...; keys outside it
            (a decoder, a classifier) are left out.
    """

    table: str
    first_conv: str | None
    prefixes: tuple[str, ...] = ("", "encoder.")


@dataclass(frozen=True)
class EncoderWeights:
    """How a native encoder takes PyTorch-layout weights.

    Args:
        table: the `zoo.port` table from their keys to our layers (relative to the encoder's
            name prefix): the primary layout (its files may be an encoder's own or an smp
            model's, under ``encoder.``).
        first_conv: their module of the first convolution (adapted for other than 3 input
            channels), e.g. ``"conv1"``.
        normalization: the preprocessing of its weights, local files included.
        sources: named weights, e.g. ``{"imagenet": WeightsSource(...)}``.
        layouts: other key layouts its files may come in (`Layout`), recognized by their
            first convolution's key.
        rename: maps an older file's key to today's (e.g. torchvision's DenseNet files
            from before 0.3), applied to every key before the table; None: keys as they are.
    """

    table: str
    first_conv: str | None
    normalization: Normalization | None
    sources: dict[str, WeightsSource]
    layouts: tuple[Layout, ...] = ()
    rename: Callable[[str], str] | None = None

    @property
    def all_layouts(self) -> tuple[Layout, ...]:
        return (Layout(self.table, self.first_conv), *self.layouts)


_ENCODERS: dict[str, EncoderWeights] = {}


def register_encoder_weights(
    encoder: str,
    *,
    table: str,
    first_conv: str | None,
    normalization: Normalization | None,
    sources: dict[str, WeightsSource],
    layouts: tuple[Layout, ...] = (),
    rename: Callable[[str], str] | None = None,
) -> EncoderWeights:
    """Declare that native encoder `encoder` loads PyTorch-layout weights (see `EncoderWeights`)."""
    spec = EncoderWeights(table, first_conv, normalization, dict(sources), tuple(layouts), rename)
    _ENCODERS[encoder] = spec
    return spec


def smp_hub_source(
    encoder: str,
    weights: str,
    revision: str,
    description: str,
    license: str,
    normalization: Normalization | None = None,
) -> WeightsSource:
    """segmentation_models_pytorch's file of `encoder`'s `weights` on the Hugging Face hub
    (``smp-hub/<encoder>.<weights>``, ``model.safetensors`` at `revision`, the one smp
    pins), cached under ``smp-hub/<encoder>.<weights>/``. A ``+`` in `weights` is a ``-``
    in the repository's name (smp's ``imagenet+background``)."""
    repo = f"smp-hub/{encoder}.{weights.replace('+', '-')}"
    return WeightsSource(
        url=f"https://huggingface.co/{repo}/resolve/{revision}/model.safetensors",
        file=f"{repo}/model.safetensors",
        description=description,
        license=license,
        normalization=normalization,
    )


def sources(encoder: str) -> dict[str, WeightsSource]:
    """The named weights registered for `encoder` (``{}`` when it has none)."""
    spec = _ENCODERS.get(encoder)
    return dict(spec.sources) if spec else {}


def weights_error(encoder: str, weights: object, hint: str) -> ValueError:
    """The one-line `ValueError` for an `encoder_weights` value an encoder cannot take."""
    return ValueError(
        f"Invalid value for argument `encoder_weights`: encoder {encoder!r} {hint}. "
        f"Received: encoder_weights={weights!r}"
    )


def encoders_with_weights() -> list[str]:
    """Registered encoders that have pretrained weights (metadata ``pretrained=True``)."""
    from zoo.registry import encoder_info, list_encoders

    return [n for n in list_encoders() if encoder_info(n).metadata.get("pretrained")]


def encoder_state(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The encoder part of a checkpoint: a segmentation_models_pytorch model stores it under
    ``encoder.`` next to its decoder and head (which are left out); other files as they are."""
    if any(k.startswith("encoder.") for k in state):
        return {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
    return dict(state)


def adapt_input_kernel(
    kernel: np.ndarray,
    channels: int,
    normalization: Normalization | None = None,
    in_axis: int = 1,
) -> tuple[np.ndarray, np.ndarray | None]:
    """A pretrained RGB first-convolution kernel for `channels` input channels.

    * 3 channels: unchanged.
    * 1 channel: the RGB kernels summed, with the per-channel normalization folded in: for a
      gray image ``g`` in [0, 1], ``sum_c W_c * (g - mean_c) / std_c = (sum_c W_c / std_c) * g
      - sum_c W_c * mean_c / std_c``. The first term is the returned kernel, applied to the
      raw image; the second is returned as ``offset`` (same layout, one input channel), the
      kernel `zoo.layers.FoldedOffset` applies to the image's support so that zero padding
      stays exactly what the 3-channel model pads (the normalized mean color). The model then
      computes, on ``g``, exactly what the RGB model computes on ``g`` repeated three times.
    * 2 or more than 3 channels: channel ``i`` gets the kernel of RGB channel ``i % 3`` (the
      normalization cycles the same way), each output channel scaled by
      ``sqrt(sum_c |W_c|^2 / sum_i |W_(i % 3)|^2)`` (about ``sqrt(3 / channels)``), so that on
      inputs whose channels are independent with the normalized statistics every output keeps
      its variance. (segmentation_models_pytorch and timm scale by ``3 / channels``, which
      keeps the response to identical channels instead; real bands lie in between.)

    Args:
        kernel: the RGB kernel; `in_axis` is its input-channel axis (1 for PyTorch's OIHW,
            2 for Keras' HWIO).
        channels: the new number of input channels.
        normalization: the weights' normalization (needed for 1 channel).
        in_axis: the input-channel axis of `kernel`.

    Returns:
        ``(kernel, offset)``; ``offset`` is None except for 1 channel with a normalization.
    """
    kernel = np.asarray(kernel, np.float64)
    rgb = kernel.shape[in_axis]
    if channels == rgb:
        return kernel.astype(np.float32), None
    w = np.moveaxis(kernel, in_axis, 0)  # (in, ...)
    if channels == 1:
        if normalization is None:
            new = w.sum(0, keepdims=True)
            return np.moveaxis(new, 0, in_axis).astype(np.float32), None
        mean, std = normalization.per_channel(rgb)
        shape = (rgb,) + (1,) * (w.ndim - 1)
        new = (w / std.reshape(shape)).sum(0, keepdims=True)
        offset = -(w * (mean / std).reshape(shape)).sum(0, keepdims=True)
        return (
            np.moveaxis(new, 0, in_axis).astype(np.float32),
            np.moveaxis(offset, 0, in_axis).astype(np.float32),
        )
    index = np.arange(channels) % rgb
    new = w[index]
    # The output-channel axis of the moved array: OIHW -> (I, O, H, W); HWIO -> (I, H, W, O).
    o_axis = 1 if in_axis == 1 else w.ndim - 1
    reduce_axes = tuple(a for a in range(w.ndim) if a != o_axis)
    scale = np.sqrt((w**2).sum(reduce_axes) / np.maximum((new**2).sum(reduce_axes), 1e-30))
    scale_shape = [1] * w.ndim
    scale_shape[o_axis] = -1
    new = new * scale.reshape(scale_shape)
    return np.moveaxis(new, 0, in_axis).astype(np.float32), None


# === Native (PyTorch-layout) encoders ===

WEIGHT_FILE_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")


def native_normalization(encoder: str, weights: object) -> Normalization | None:
    """Check `weights` for native encoder `encoder`; the normalization its graph applies.

    None for random weights; the source's (or the encoder's) normalization otherwise. A
    local file is checked to exist, except while a saved model is restored (its own file
    holds the weights; the original may be long gone).
    """
    from zoo.build_context import is_restoring

    if weights is None:
        return None
    spec = _ENCODERS.get(encoder)
    if spec is None:
        raise weights_error(
            encoder,
            weights,
            "has no published pretrained weights; use None (random), or an encoder with "
            f"weights: {', '.join(encoders_with_weights())}",
        )
    if not isinstance(weights, (str, os.PathLike)) or not str(weights):
        raise weights_error(encoder, weights, _choices(spec))
    if str(weights) in spec.sources:
        source = spec.sources[str(weights)]
        return source.normalization or spec.normalization
    if not is_restoring() and not Path(weights).expanduser().is_file():
        raise weights_error(encoder, weights, _choices(spec) + "; no such file")
    return spec.normalization


def _choices(spec: EncoderWeights) -> str:
    names = ", ".join(repr(n) for n in spec.sources)
    return (
        f"takes None, {names} or the path of an existing weights file "
        f"({', '.join(WEIGHT_FILE_SUFFIXES)})"
    )


def load_native(
    encoder: str,
    weights: object,
    inputs,
    features,
    name: str,
    normalization: Normalization | None,
) -> None:
    """Load `weights` into the layers native encoder `encoder` built between `inputs` and
    `features` (its layers are named ``{name}_...``), the first conv adapted to the input's
    channels with the `normalization` the graph applies (None: the caller normalizes).
    Nothing happens for random weights or while a saved model is restored."""
    from zoo.build_context import is_restoring
    from zoo.port.mapping import assign, get_table, layers_between
    from zoo.port.state_dict import load_state_dict

    if weights is None or is_restoring():
        return
    spec = _ENCODERS[encoder]
    if str(weights) in spec.sources:
        source = spec.sources[str(weights)]
        path = fetch(source, f"{weights!r} weights of encoder {encoder!r}")
    else:
        path = Path(weights).expanduser()
    state = load_state_dict(path)
    if spec.rename is not None:
        state = {spec.rename(k): v for k, v in state.items()}
    layout, state = _layout_state(encoder, spec, state, path)
    channels = int(inputs.shape[-1])
    if layout.first_conv and f"{layout.first_conv}.weight" in state:
        key = f"{layout.first_conv}.weight"
        if channels == 1 and normalization is not None and state[key].shape[1] != 3:
            raise weights_error(
                encoder,
                weights,
                f"cannot fold the RGB normalization into a first convolution that takes "
                f"{state[key].shape[1]} channels; pass encoder_kwargs="
                "{'input_normalization': None} and normalize the images as for its training",
            )
        state[key], offset = adapt_input_kernel(state[key], channels, normalization, in_axis=1)
        if offset is not None:
            state[f"{layout.first_conv}.folded_offset.weight"] = offset
    layers = layers_between(inputs, features)
    table = get_table(layout.table).bind(ours=f"{name}_")
    assign(layers, state, table, source=str(path))


def _layout_state(
    encoder: str, spec: EncoderWeights, state: dict[str, np.ndarray], path: Path
) -> tuple[Layout, dict[str, np.ndarray]]:
    """The layout of checkpoint `state` (the first whose first-conv key it has, under one of
    the layout's prefixes) and the encoder's keys, relative to that prefix."""
    from zoo.port.mapping import PortError

    for layout in spec.all_layouts:
        for prefix in layout.prefixes if layout.first_conv else ():
            if f"{prefix}{layout.first_conv}.weight" in state:
                return layout, {
                    k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)
                }
    if len(spec.all_layouts) == 1:
        # One layout: the table's own check names the first key that does not fit.
        return spec.all_layouts[0], encoder_state(state)
    anchors = [
        f"{prefix}{layout.first_conv}.weight"
        for layout in spec.all_layouts
        for prefix in layout.prefixes
    ]
    raise PortError(
        f"Cannot load {path} into encoder {encoder!r}: it has none of the keys "
        f"{', '.join(repr(a) for a in anchors)} by which its checkpoints are recognized "
        f"(port tables {', '.join(repr(la.table) for la in spec.all_layouts)}); not a "
        f"checkpoint of this encoder? Its first keys: {list(state)[:3]}"
    )


def copy_adapting_first_conv(source, target, channels: int, bgr: bool = False) -> None:
    """Copy an RGB Keras model's weights into the same architecture built for `channels`
    input channels: every variable as it is, except the one whose shape differs, a first
    convolution kernel ``(kh, kw, 3, out)``, adapted with `adapt_input_kernel` (its input
    channels first put in RGB order when the model takes BGR, `bgr`)."""
    for s, t in zip(source.weights, target.weights, strict=True):
        value = np.asarray(s)
        if tuple(s.shape) != tuple(t.shape):
            first_conv = (
                value.ndim == 4
                and value.shape[2] == 3
                and t.shape[2] == channels
                and (value.shape[:2], value.shape[3]) == (tuple(t.shape[:2]), t.shape[3])
            )
            if not first_conv:
                raise ValueError(
                    f"Invalid value for argument `input_shape`: these pretrained weights cannot "
                    f"take {channels} channels ({s.path}: {tuple(s.shape)} vs "
                    f"{tuple(t.shape)}). Received: channels={channels}"
                )
            if bgr:
                value = value[:, :, ::-1]
            value, _ = adapt_input_kernel(value, channels, None, in_axis=2)
        t.assign(value)
